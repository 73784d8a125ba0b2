// Raw `ws` WebSocketServer: echo on any path except /sub and /pub (topic fan-out, loop over a Set).
import http from 'node:http'
import { WebSocketServer } from 'ws'
import { parseServerArgs, announceReady } from './common.js'

const { port, ctlPort, deflate } = parseServerArgs()

const server = http.createServer((req, res) => { res.statusCode = 426; res.end() })
const wss = new WebSocketServer({ server, perMessageDeflate: deflate })
const subscribers = new Set()

wss.on('connection', (socket, request) => {
  const path = request.url.split('?')[0]
  if (path === '/sub') {
    subscribers.add(socket)
    socket.on('close', () => subscribers.delete(socket))
    return
  }
  if (path === '/pub') {
    socket.on('message', (data, isBinary) => {
      for (const sub of subscribers) sub.send(data, { binary: isBinary })
    })
    return
  }
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
})

server.listen(port, '127.0.0.1', async () => {
  await announceReady('ws', server.address().port, ctlPort, () => {
    for (const c of wss.clients) c.terminate()
    server.close()
  })
})
