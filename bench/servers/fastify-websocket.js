// @fastify/websocket v11 on Fastify: echo route on `/`, topic fan-out on /sub + /pub (loop over a Set),
// JSON echo on /json (`json` scenario): JSON.parse, an ajv validator compiled once from the scenario's schema with
// Fastify's own ajv options, JSON.stringify, all by hand (the usual way with @fastify/websocket).
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import Ajv from 'ajv'
import { parseServerArgs, announceReady } from './common.js'
import { SayMessage, FASTIFY_AJV_OPTIONS } from './json-messages.js'

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

const validateSay = new Ajv(FASTIFY_AJV_OPTIONS).compile(SayMessage)

app.get('/json', { websocket: true }, (socket) => {
  socket.on('message', (data, isBinary) => {
    if (isBinary) { socket.close(1003, 'Binary messages are not accepted'); return }
    let msg
    try { msg = JSON.parse(data.toString()) } catch { socket.close(1007, 'Invalid JSON'); return }
    if (!validateSay(msg)) { socket.close(1007, 'Invalid message'); return }
    socket.send(JSON.stringify({ type: 'said', text: msg.text, n: msg.n }))
  })
})

await app.listen({ port, host: '127.0.0.1' })
await announceReady('fastify-websocket', app.server.address().port, ctlPort, () => app.close())
