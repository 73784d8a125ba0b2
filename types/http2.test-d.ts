// Type-level tests for HTTP/2 apps (RFC 8441): the plugin registers on Fastify instances whose server is Node's
// HTTP/2 server (TLS, with or without allowHTTP1, and h2c), and routes keep their typed sockets; handlers can tell
// the transports apart from the request. Compiled by `npm test` (tsc --noEmit), never run.
import Fastify from 'fastify'
import type { Duplex } from 'node:stream'
import type { Http2ServerRequest } from 'node:http2'
import websocket, { type WebSocket } from '../lib/index.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function assertEqual<A, B> (_proof: Equal<A, B>): void {}

const tls = Fastify({ http2: true, https: { key: '', cert: '', allowHTTP1: true } })
await tls.register(websocket, { origins: ['https://chat.example'], ports: [443] })
tls.get('/chat', { websocket: { protocols: ['chat.v2', 'chat.v1'] } }, (socket, request) => {
  assertEqual<typeof socket.protocol, 'chat.v2' | 'chat.v1' | ''>(true)
  // The request of an HTTP/2 app is Node's Http2ServerRequest: httpVersion '2.0' on a stream, '1.1' on an upgrade.
  assertEqual<typeof request.raw, Http2ServerRequest>(true)
  const version: string = request.raw.httpVersion
  const raw: Duplex = socket.rawSocket
  socket.send(version + String(raw.writable))
})

const h2c = Fastify({ http2: true })
await h2c.register(websocket, { maxConnections: 1000 })
h2c.get('/feed', { websocket: true }, (socket: WebSocket) => {
  // @ts-expect-error a misspelt event does not compile on an HTTP/2 app either
  socket.on('mesage', () => {})
})
