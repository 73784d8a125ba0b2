// Type-level test of the CommonJS spelling (a .cts file: TypeScript >= 5.8 with `module: nodenext` types a
// require() of this ESM package as its namespace). The plugin is the namespace's `default`; the named exports sit
// beside it. Compiled by `npm test`, never run; the runtime side is test/package/packaging.test.ts.
/* eslint-disable @typescript-eslint/no-require-imports -- this file is about the require() spelling */
import websocket = require('../lib/index.js')
import Fastify = require('fastify')

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function assertEqual<A, B> (_proof: Equal<A, B>): void {}

const app = Fastify()
app.register(websocket.default, { ports: 'any' })
app.register(websocket.fastifyWebSocket, { ports: 'any' })
// @ts-expect-error in TypeScript the namespace object is not a plugin: register its `default`
app.register(websocket, { ports: 'any' })
app.get('/chat', { websocket: { protocols: ['chat.v1'] } }, (socket) => {
  assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
})
app.route(websocket.webSocketRoute({ method: 'GET', url: '/r', websocket: true, handler: (socket) => { socket.send('x') } }))
app.injectWS('/chat').catch((err: unknown) => {
  if (err instanceof websocket.HandshakeRejectedError) assertEqual<typeof err.statusCode, number>(true)
  if (err instanceof websocket.errors.FST_WS_HANDSHAKE_REJECTED) assertEqual<typeof err.code, string>(true)
})
