// @fastify/websocket v11 on Fastify: echo route on `/`, topic fan-out on /sub + /pub (loop over a Set).
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import { parseServerArgs, announceReady } from './common.js'

const { port, ctlPort, deflate } = parseServerArgs()

const app = Fastify({ logger: false })
await app.register(fastifyWebsocket, deflate ? { options: { perMessageDeflate: true } } : {})

const subscribers = new Set()

app.get('/', { websocket: true }, (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
})

app.get('/sub', { websocket: true }, (socket) => {
  subscribers.add(socket)
  socket.on('close', () => subscribers.delete(socket))
})

app.get('/pub', { websocket: true }, (socket) => {
  socket.on('message', (data, isBinary) => {
    for (const sub of subscribers) sub.send(data, { binary: isBinary })
  })
})

await app.listen({ port, host: '127.0.0.1' })
await announceReady('fastify-websocket', app.server.address().port, ctlPort, () => app.close())
