// Type-level tests: every usual Fastify way of writing a WebSocket route keeps `socket.protocol` typed as the
// literal union of the route's protocols (or `string` where nothing declares them) and the request typed from
// the route's generics, schema or type provider. Compiled by `npm test` (tsc --noEmit), never run.
// Every `@ts-expect-error` line must stay an error.
import Fastify, { type FastifyRequest, type FastifyTypeProvider } from 'fastify'
import websocket, { webSocketRoute, type WebSocket } from '../lib/index.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function assertEqual<A, B> (_proof: Equal<A, B>): void {}

const app = Fastify()
await app.register(websocket)

/** The misuse every spelling must reject, on a socket whose only protocol is 'chat.v1'. */
function misuse (socket: WebSocket<'chat.v1'>): void {
  // @ts-expect-error 'chat.v2' is not one of the route's protocols: the comparison can never be true
  if (socket.protocol === 'chat.v2') socket.send('never')
  // @ts-expect-error misspelt event name
  socket.on('mesage', () => {})
  // @ts-expect-error wrong listener signature: message data is a Buffer, not a string
  socket.on('message', (data: string) => data)
}

// 1. Plain shorthand: the protocols are inferred from the options.
app.get('/plain/:room', { websocket: { protocols: ['chat.v1'] } }, (socket, request) => {
  assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
  assertEqual<typeof request.params, unknown>(true)
  misuse(socket)
  // @ts-expect-error wrong protocol literal compared
  if (socket.protocol === 'chat.v2') socket.send('never')
  // @ts-expect-error misspelt event name
  socket.on('clsoe', () => {})
  // @ts-expect-error wrong listener signature: the close code is a number
  socket.on('close', (code: string) => code)
})
app.get('/untyped', { websocket: true }, (socket) => {
  assertEqual<typeof socket.protocol, string>(true)
})

// 2. Explicit route generics (Params/Querystring/Headers), the usual Fastify way. TypeScript gives every type
// parameter that is not written its default once one is written (no partial inference), so the protocols are
// declared in the generics too, with the `Protocols` key: as a tuple like the option, or as a union.
app.get<{ Params: { room: string }, Protocols: ['chat.v1'] }>('/generic/:room', { websocket: { protocols: ['chat.v1'] } }, (socket, request) => {
  assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
  assertEqual<typeof request.params.room, string>(true)
  misuse(socket)
  // @ts-expect-error wrong protocol literal compared
  if (socket.protocol === 'chat.v2') socket.send('never')
  // @ts-expect-error misspelt event name
  socket.on('mesage', () => {})
  // @ts-expect-error wrong listener signature: ping data is a Buffer
  socket.on('ping', (data: number) => data)
})
app.get<{ Querystring: { token: string }, Headers: { 'x-client': string }, Protocols: 'chat.v1' | 'chat.v2' }>(
  '/generic-union', { websocket: { protocols: ['chat.v2', 'chat.v1'] } }, (socket, request) => {
    assertEqual<typeof socket.protocol, 'chat.v1' | 'chat.v2' | ''>(true)
    assertEqual<typeof request.query.token, string>(true)
    assertEqual<typeof request.headers['x-client'], string>(true)
    // @ts-expect-error wrong protocol literal compared
    if (socket.protocol === 'chat.v3') socket.send('never')
  })
// The declared protocols and the option must agree.
// @ts-expect-error 'chat.v3' is not among the protocols the generics declare
app.get<{ Params: { room: string }, Protocols: ['chat.v1'] }>('/generic-wrong/:room', { websocket: { protocols: ['chat.v3'] } }, (socket) => {
  socket.send('x')
})
// Without the `Protocols` key the explicit-generics spelling still compiles, with `protocol: string`.
app.get<{ Params: { room: string } }>('/generic-wide/:room', { websocket: { protocols: ['chat.v1'] } }, (socket, request) => {
  assertEqual<typeof socket.protocol, string>(true)
  assertEqual<typeof request.params.room, string>(true)
})
// Annotating the request instead of writing generics keeps both, with nothing declared twice.
app.get('/annotated/:room', { websocket: { protocols: ['chat.v1'] } }, (socket, request: FastifyRequest<{ Params: { room: string } }>) => {
  assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
  assertEqual<typeof request.params.room, string>(true)
})

// 3. app.route() without the helper: `wsHandler` next to an HTTP `handler`.
app.route({
  method: 'GET',
  url: '/both',
  websocket: { protocols: ['chat.v1'] },
  handler: (_request, reply) => reply.send('http'),
  wsHandler: (socket) => {
    assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
    misuse(socket)
    // @ts-expect-error wrong protocol literal compared
    if (socket.protocol === 'chat.v2') socket.send('never')
    // @ts-expect-error misspelt event name
    socket.on('drian', () => {})
    // @ts-expect-error wrong listener signature: drain has no arguments
    socket.on('drain', (n: number) => n)
  }
})
app.route({
  method: 'GET',
  url: '/both-untyped',
  handler: (_request, reply) => reply.send('http'),
  wsHandler: (socket) => { assertEqual<typeof socket.protocol, string>(true) }
})
app.route<{ Params: { id: string }, Protocols: ['chat.v1'] }>({
  method: 'GET',
  url: '/both/:id',
  websocket: { protocols: ['chat.v1'] },
  handler: (request, reply) => reply.send(request.params.id),
  wsHandler: (socket, request) => {
    assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
    assertEqual<typeof request.params.id, string>(true)
  }
})
// A plain HTTP route is untouched by the plugin's overloads.
app.route({ method: 'GET', url: '/http', handler: (request, reply) => reply.send(request.url) })

// 4. app.route() with the webSocketRoute() helper: `handler` receives the socket.
app.route(webSocketRoute({
  method: 'GET',
  url: '/helper',
  websocket: { protocols: ['chat.v1'] },
  handler: (socket) => {
    assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
    misuse(socket)
    // @ts-expect-error wrong protocol literal compared
    if (socket.protocol === 'chat.v2') socket.send('never')
    // @ts-expect-error misspelt event name
    socket.on('pnog', () => {})
    // @ts-expect-error wrong listener signature: error gets one WebSocketError
    socket.on('error', (err: Error, extra: string) => extra)
  }
}))
app.route(webSocketRoute<{ Params: { id: string }, Protocols: ['chat.v1'] }>({
  method: 'GET',
  url: '/helper/:id',
  websocket: { protocols: ['chat.v1'] },
  handler: (socket, request) => {
    assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
    assertEqual<typeof request.params.id, string>(true)
  }
}))

// 5. A type provider: params typed from the schema, protocols from the options.
interface StringPropertiesProvider extends FastifyTypeProvider {
  validator: this['schema'] extends { readonly properties: infer P } ? { [K in keyof P]: string } : unknown
  serializer: unknown
}
const typed = app.withTypeProvider<StringPropertiesProvider>()
const roomSchema = { params: { type: 'object', properties: { room: { type: 'string' } }, required: ['room'] } } as const
typed.get('/provider/:room', { schema: roomSchema, websocket: { protocols: ['chat.v1'] } }, (socket, request) => {
  assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
  assertEqual<typeof request.params, { readonly room: string }>(true)
  misuse(socket)
  // @ts-expect-error wrong protocol literal compared
  if (socket.protocol === 'chat.v2') socket.send('never')
  // @ts-expect-error misspelt event name
  socket.on('mesage', () => {})
  // @ts-expect-error wrong listener signature: isBinary is a boolean
  socket.on('message', (data, isBinary: string) => isBinary)
  // @ts-expect-error the schema declares no such param
  request.params.user.trim()
})
typed.route({
  method: 'GET',
  url: '/provider-route/:room',
  schema: roomSchema,
  websocket: { protocols: ['chat.v1'] },
  handler: (request, reply) => reply.send(request.params.room),
  wsHandler: (socket, request) => {
    assertEqual<typeof socket.protocol, 'chat.v1' | ''>(true)
    assertEqual<typeof request.params, { readonly room: string }>(true)
  }
})
