// Type-level tests of the public API: this file is compiled by `npm test` (tsc --noEmit) and never run.
// Every `@ts-expect-error` line must stay an error: if the types loosen, compilation fails.
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import websocket, {
  WebSocket, webSocketRoute, type WebSocketError, type IteratedMessage, type RouteWebSocketOptions,
  type WebSocketPluginOptions, type TopicBroker, type PublishResult, type HandshakeRejectedError
} from '../lib/index.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectType<T> (_value: T): void {}
function assertEqual<A, B> (_proof: Equal<A, B>): void {}

const app = Fastify()
await app.register(websocket, { origins: ['https://app.example.com', /^https:\/\/.*\.example\.org$/], ports: [443], maxPayload: 1 << 20 })
await app.register(websocket, { origins: (origin: string, request: FastifyRequest) => origin.length > 0 && request.url !== '' })
await app.register(websocket, { ports: 'any', heartbeat: { interval: 30_000, timeout: 10_000 }, perMessageDeflate: { threshold: 512 } })
// @ts-expect-error ports is a list of numbers or 'any'
await app.register(websocket, { ports: 'all' })
// @ts-expect-error maxPayload is a number
await app.register(websocket, { maxPayload: '1mb' })

// The socket's protocol is the literal union of the route's protocols.
app.get('/chat', { websocket: { protocols: ['chat', 'superchat'] } }, function (socket, request) {
  assertEqual<typeof socket.protocol, 'chat' | 'superchat' | ''>(true)
  expectType<FastifyRequest>(request)
  expectType<FastifyInstance>(this)
})
app.get('/chat2', { websocket: { protocols: ['v1.chat'] as const } }, (socket) => {
  assertEqual<typeof socket.protocol, 'v1.chat' | ''>(true)
})
app.get('/plain', { websocket: true }, function (socket, request) {
  assertEqual<typeof socket.protocol, string>(true)
  expectType<FastifyInstance>(this)
  expectType<string>(request.url)

  // Typed events: the listener's parameters are inferred from the event name.
  socket.on('message', (data, isBinary) => {
    assertEqual<typeof data, Buffer>(true)
    assertEqual<typeof isBinary, boolean>(true)
  })
  socket.on('close', (code, reason) => {
    assertEqual<typeof code, number>(true)
    assertEqual<typeof reason, string>(true)
  })
  socket.on('error', (err) => { assertEqual<typeof err, WebSocketError>(true) })
  socket.on('ping', (data) => { expectType<Buffer>(data) })
  socket.on('drain', () => {})
  // @ts-expect-error misspelt event name
  socket.on('mesage', () => {})
  // @ts-expect-error wrong listener signature: code is a number
  socket.on('close', (code: string) => { expectType<string>(code) })
  // @ts-expect-error drain has no arguments
  socket.on('drain', (x: number) => { expectType<number>(x) })

  expectType<boolean>(socket.send('text'))
  socket.send(Buffer.from('x'), { binary: true })
  socket.send(new Uint8Array(3), (err) => { expectType<Error | null | undefined>(err) })
  socket.send(new ArrayBuffer(8))
  // @ts-expect-error numbers are not sendable
  socket.send(42)
  expectType<Promise<void>>(socket.flush())
  socket.close(1000, 'bye')
  // @ts-expect-error the reason is a string
  socket.close(1000, 42)
  expectType<0 | 1 | 2 | 3>(socket.readyState)
  expectType<number>(socket.bufferedAmount)
  expectType<string>(socket.extensions)
  expectType<ReadonlySet<string>>(socket.topics)
  socket.subscribe('room:1')
  // @ts-expect-error socket.topics is read-only
  socket.topics.add('x')
})

app.get('/iterate', { websocket: true }, async (socket) => {
  for await (const message of socket) {
    assertEqual<typeof message, IteratedMessage>(true)
    if (typeof message === 'string') expectType<string>(message)
    else expectType<Buffer>(message)
  }
})

// Route generics still work alongside websocket.
app.get<{ Params: { room: string } }>('/rooms/:room', { websocket: true }, (socket, request) => {
  expectType<string>(request.params.room)
  expectType<WebSocket>(socket)
})
// @ts-expect-error a WebSocket handler's first argument is the socket, not a reply
app.get('/wrong', { websocket: true }, (socket, request) => { socket.code(200); expectType<unknown>(request) })

// HTTP and WebSocket on one route.
app.route({
  method: 'GET',
  url: '/both',
  handler: (_request, reply) => reply.send('http'),
  wsHandler: (socket) => { socket.send('ws') }
})
app.route(webSocketRoute({
  method: 'GET',
  url: '/route',
  websocket: { protocols: ['a', 'b'] },
  handler: (socket) => { assertEqual<typeof socket.protocol, 'a' | 'b' | ''>(true) }
}))

const options: RouteWebSocketOptions<readonly ['x']> = { protocols: ['x'], selectProtocol: () => 'x' }
expectType<RouteWebSocketOptions>(options)
// @ts-expect-error selectProtocol must return one of the route's protocols
const badSelect: RouteWebSocketOptions<readonly ['x']> = { protocols: ['x'], selectProtocol: () => 'y' }
expectType<unknown>(badSelect)

// Decorations.
expectType<Promise<PublishResult>>(app.websocketServer.publish('room:1', 'hello', { except: undefined }))
expectType<ReadonlySet<WebSocket>>(app.websocketServer.clients)
const client = await app.injectWS('/plain', { protocols: ['chat'], origin: 'https://app.example.com', headers: { cookie: 'a=b' } })
expectType<WebSocket>(client)
try {
  await app.injectWS('/nope')
} catch (err) {
  expectType<number>((err as HandshakeRejectedError).statusCode)
}

const broker: TopicBroker = {
  subscribe (_socket, topic) { return { status: 'live', topic, epoch: 'e', offset: 0 } },
  unsubscribe (_socket, _topic) {},
  async publish (topic) { return { topic, epoch: 'e', offset: 1 } },
  subscriberCount () { return 0 },
  async subscriberCounts () { return { total: 0, instances: {} } }
}
const pluginOptions: WebSocketPluginOptions = { topics: broker }
expectType<WebSocketPluginOptions>(pluginOptions)
expectType<number>(WebSocket.OPEN)
