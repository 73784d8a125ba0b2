// Typed messages: with a type provider, the socket's inbound messages and sendMessage()'s argument are inferred
// from the route's `websocket.messages` schemas, as Fastify infers request.body from schema.body.
import Fastify from 'fastify'
import { Type } from 'typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import { z } from 'zod'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import websocket from '../lib/index.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectType<T extends true> (): T | void {}

// ---- TypeBox ----
{
  const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
  void app.register(websocket)
  const Inbound = Type.Union([
    Type.Object({ type: Type.Literal('join'), nick: Type.String() }),
    Type.Object({ type: Type.Literal('say'), text: Type.String() })
  ])
  const Outbound = Type.Object({ type: Type.Literal('said'), nick: Type.String(), text: Type.String() })
  app.get('/chat', { websocket: { protocols: ['chat.v1'], messages: { receive: Inbound, send: Outbound } } }, (socket) => {
    expectType<Equal<typeof socket.protocol, 'chat.v1' | ''>>()
    socket.on('message', (message) => {
      switch (message.type) {
        case 'join':
          expectType<Equal<typeof message.nick, string>>()
          // @ts-expect-error a join has no text
          void message.text
          break
        case 'say':
          socket.sendMessage({ type: 'said', nick: 'n', text: message.text })
          break
      }
    })
    // @ts-expect-error the wrong shape does not compile
    socket.sendMessage({ type: 'said', nick: 'n' })
    // @ts-expect-error nor a wrong literal
    socket.sendMessage({ type: 'other', nick: 'n', text: 't' })
    // @ts-expect-error a message listener of a schema route takes the message, not (data, isBinary)
    socket.on('message', (data: Buffer, isBinary: boolean) => { void data; void isBinary })
    socket.on('invalid', (err) => {
      expectType<Equal<typeof err.reason, 'binary' | 'json' | 'schema'>>()
      expectType<Equal<typeof err.data, Buffer>>()
    })
  })
  // A route without schemas keeps raw messages.
  app.get('/raw', { websocket: true }, (socket) => {
    socket.on('message', (data, isBinary) => {
      expectType<Equal<typeof data, Buffer>>()
      expectType<Equal<typeof isBinary, boolean>>()
    })
  })
}

// ---- JSON Schema `as const` with json-schema-to-ts ----
{
  const app = Fastify().withTypeProvider<JsonSchemaToTsProvider>()
  void app.register(websocket)
  app.get('/js', {
    websocket: {
      messages: {
        receive: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'], additionalProperties: false },
        send: { type: 'object', properties: { doubled: { type: 'integer' } }, required: ['doubled'] }
      }
    }
  }, (socket) => {
    socket.on('message', (message) => {
      expectType<Equal<typeof message.n, number>>()
      socket.sendMessage({ doubled: message.n * 2 })
      // @ts-expect-error doubled is a number
      socket.sendMessage({ doubled: 'two' })
    })
  })
}

// ---- Zod ----
{
  const app = Fastify().withTypeProvider<ZodTypeProvider>()
  void app.register(websocket)
  const Inbound = z.discriminatedUnion('type', [
    z.object({ type: z.literal('ping'), at: z.number() }),
    z.object({ type: z.literal('echo'), text: z.string() })
  ])
  const Outbound = z.object({ type: z.literal('pong'), at: z.number() })
  app.get('/zod', { websocket: { messages: { receive: Inbound, send: Outbound } } }, async (socket) => {
    for await (const message of socket) {
      if (message.type === 'ping') socket.sendMessage({ type: 'pong', at: message.at })
      else expectType<Equal<typeof message.text, string>>()
    }
    // @ts-expect-error at must be a number
    socket.sendMessage({ type: 'pong', at: 'now' })
  })
}

// ---- the default type provider: messages are unknown until narrowed ----
{
  const app = Fastify()
  void app.register(websocket)
  app.get('/plain', { websocket: { messages: { receive: { type: 'object' } } } }, (socket) => {
    socket.on('message', (message) => { expectType<Equal<typeof message, unknown>>() })
  })
}

// ---- a typed topic channel ----
{
  const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
  void app.register(websocket)
  const room = app.websocketServer.channel(Type.Object({ nick: Type.String(), text: Type.String() }))
  room.publish('room:1', { nick: 'a', text: 'b' })
  // @ts-expect-error text is missing
  room.publish('room:1', { nick: 'a' })
}

// ---- per-type dispatch: socket.onMessage(type, handler) narrows the message to its variant ----
{
  const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
  void app.register(websocket)
  const Inbound = Type.Union([
    Type.Object({ type: Type.Literal('join'), nick: Type.String() }),
    Type.Object({ type: Type.Literal('say'), text: Type.String() })
  ])
  const Outbound = Type.Object({ type: Type.Literal('said'), nick: Type.String(), text: Type.String() })
  app.get('/dispatch', { websocket: { messages: { receive: Inbound, send: Outbound } } }, (socket) => {
    socket
      .onMessage('join', (message, self) => {
        expectType<Equal<typeof message, { type: 'join', nick: string }>>()
        expectType<Equal<typeof self, typeof socket>>()
        // @ts-expect-error a join has no text
        void message.text
      })
      .onMessage('say', async (message) => {
        expectType<Equal<typeof message.text, string>>()
        socket.sendMessage({ type: 'said', nick: 'n', text: message.text })
        await Promise.resolve()
      })
    // @ts-expect-error 'leave' is not a type of the receive schema
    socket.onMessage('leave', () => {})
    // @ts-expect-error a say's text is a string
    socket.onMessage('say', (message: { type: 'say', text: number }) => { void message })
  })
  // A raw route has no typed messages to dispatch.
  app.get('/raw-dispatch', { websocket: true }, (socket) => {
    // @ts-expect-error onMessage() needs a receive schema
    socket.onMessage('join', () => {})
  })
}

{
  const app = Fastify().withTypeProvider<JsonSchemaToTsProvider>()
  void app.register(websocket)
  app.get('/js-dispatch', {
    websocket: {
      messages: {
        receive: {
          oneOf: [
            { type: 'object', properties: { type: { const: 'add' }, n: { type: 'integer' } }, required: ['type', 'n'], additionalProperties: false },
            { type: 'object', properties: { type: { const: 'reset' } }, required: ['type'], additionalProperties: false }
          ]
        }
      }
    }
  }, (socket) => {
    socket.onMessage('add', (message) => {
      expectType<Equal<typeof message.n, number>>()
      // @ts-expect-error n is a number
      const s: string = message.n
      void s
    })
    socket.onMessage('reset', (message) => {
      expectType<Equal<typeof message.type, 'reset'>>()
      // @ts-expect-error a reset has no n
      void message.n
    })
    // @ts-expect-error 'mul' is not a type of the receive schema
    socket.onMessage('mul', () => {})
  })
}

{
  const app = Fastify().withTypeProvider<ZodTypeProvider>()
  void app.register(websocket)
  const Inbound = z.discriminatedUnion('type', [
    z.object({ type: z.literal('ping'), at: z.number() }),
    z.object({ type: z.literal('echo'), text: z.string() })
  ])
  app.get('/zod-dispatch', { websocket: { messages: { receive: Inbound } } }, (socket) => {
    socket.onMessage('ping', (message) => {
      expectType<Equal<typeof message, { type: 'ping', at: number }>>()
      // @ts-expect-error a ping has no text
      void message.text
    })
    socket.onMessage('echo', (message) => { expectType<Equal<typeof message.text, string>>() })
    // @ts-expect-error 'pong' is not a type of the receive schema
    socket.onMessage('pong', () => {})
  })
}

// ---- dispatch with the default type provider: any type name, the message is unknown ----
{
  const app = Fastify()
  void app.register(websocket)
  app.get('/plain-dispatch', { websocket: { messages: { receive: { type: 'object' } } } }, (socket) => {
    socket.onMessage('anything', (message) => { expectType<Equal<typeof message, unknown>>() })
  })
}
