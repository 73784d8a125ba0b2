/**
 * Per-type dispatch (`socket.onMessage(type, handler)`) on routes whose `messages.receive` schema is a union
 * discriminated by `type`: each validated message goes to the handler of its type (one Map lookup), a type with no
 * handler goes to the 'message' event, order is kept (also for messages that arrive before the handlers are set),
 * a handler that throws or rejects closes with 1011 and is logged, misuse throws FST_WS_INVALID_HANDLER.
 */
import t, { type Test } from 'tap'
import type { FastifyBaseLogger, FastifyInstance, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify'
import { z } from 'zod'
import { serializerCompiler as zodSerializer, validatorCompiler as zodValidator } from 'fastify-type-provider-zod'
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts'
import type { WebSocket } from '../../lib/index.js'
import { buildApp, delay, waitFor, within, type LogCapture } from '../helpers/index.js'

const ChatIn = {
  oneOf: [
    { type: 'object', properties: { type: { const: 'join' }, nick: { type: 'string', minLength: 1 } }, required: ['type', 'nick'], additionalProperties: false },
    { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string' } }, required: ['type', 'text'], additionalProperties: false },
    // (No additionalProperties: false here: with Fastify's ajv defaults, removeAdditional would strip the fields of
    // the other types from a message while trying this branch, whose only requirement every message meets.)
    { type: 'object', properties: { type: { const: 'leave' } }, required: ['type'] }
  ]
} as const

/** An app (closed on teardown) whose routes' messages are typed from their JSON Schemas (json-schema-to-ts). */
type TypedApp = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, JsonSchemaToTsProvider>

async function typedApp (t: Test): Promise<{ app: TypedApp, logs: LogCapture }> {
  const { app, logs } = await buildApp({})
  t.teardown(() => app.close())
  return { app: app.withTypeProvider<JsonSchemaToTsProvider>(), logs }
}

/** Resolves with the client's next `count` messages, parsed. */
function nextMessages (client: WebSocket, count: number): Promise<unknown[]> {
  const got: unknown[] = []
  return within(new Promise((resolve) => {
    const onMessage = (data: Buffer): void => {
      got.push(JSON.parse(data.toString()))
      if (got.length === count) {
        client.off('message', onMessage)
        resolve(got)
      }
    }
    client.on('message', onMessage)
  }), 2000, `${count} messages`)
}

function closed (client: WebSocket): Promise<[number, string]> {
  return within(new Promise((resolve) => { client.once('close', (code, reason) => resolve([code, reason])) }), 2000, 'close')
}

t.test('each type goes to its handler, a type without one to the message event, in arrival order', async (t) => {
  const { app } = await typedApp(t)
  app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, (socket) => {
    socket
      .onMessage('join', function (message, self) {
        t.equal(this, socket, 'the handler is called on the socket')
        t.equal(self, socket, 'and gets it as its second argument')
        socket.sendMessage({ handled: 'join', nick: message.nick })
      })
      .onMessage('say', (message) => { socket.sendMessage({ handled: 'say', text: message.text }) })
    socket.on('message', (message) => { socket.sendMessage({ listener: message }) })
  })
  await app.ready()
  const client = await app.injectWS('/chat')
  t.teardown(() => client.terminate())
  const replies = nextMessages(client, 4)
  client.send(JSON.stringify({ type: 'join', nick: 'ada' }))
  client.send(JSON.stringify({ type: 'leave' }))
  client.send(JSON.stringify({ type: 'say', text: 'hi' }))
  client.send(JSON.stringify({ type: 'say', text: 'again' }))
  t.same(await replies, [
    { handled: 'join', nick: 'ada' },
    { listener: { type: 'leave' } },
    { handled: 'say', text: 'hi' },
    { handled: 'say', text: 'again' }
  ])
})

t.test('an invalid message reaches no handler: closed with 1007', async (t) => {
  const { app } = await typedApp(t)
  let calls = 0
  app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, (socket) => {
    socket.onMessage('join', () => { calls++ })
  })
  await app.ready()
  const client = await app.injectWS('/chat')
  t.teardown(() => client.terminate())
  const done = closed(client)
  client.send(JSON.stringify({ type: 'join', nick: '' }))
  t.equal((await done)[0], 1007)
  t.equal(calls, 0)
})

t.test('messages that arrive before the handlers are set are dispatched in order once they are', async (t) => {
  const { app, logs } = await typedApp(t)
  app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, async (socket) => {
    await delay(50) // e.g. loading the user
    socket.onMessage('join', (message) => { socket.sendMessage({ join: message.nick }) })
    socket.onMessage('say', (message) => { socket.sendMessage({ say: message.text }) })
  })
  await app.ready()
  const client = await app.injectWS('/chat')
  t.teardown(() => client.terminate())
  const replies = nextMessages(client, 3)
  client.send(JSON.stringify({ type: 'say', text: '1' }))
  client.send(JSON.stringify({ type: 'join', nick: 'ada' }))
  client.send(JSON.stringify({ type: 'say', text: '2' }))
  t.same(await replies, [{ say: '1' }, { join: 'ada' }, { say: '2' }])
  t.same(logs.find('no onMessage() handler'), [], 'nothing waited for a consumer')
})

t.test('a type with no handler and no listener waits, first in line, for a message listener (order kept), with one warning', async (t) => {
  const { app, logs } = await typedApp(t)
  let server: WebSocket | undefined
  const got: string[] = []
  app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, (socket) => {
    server = socket as unknown as WebSocket
    socket.onMessage('say', (message) => { got.push(`say ${message.text}`) })
  })
  await app.ready()
  const client = await app.injectWS('/chat')
  t.teardown(() => client.terminate())
  client.send(JSON.stringify({ type: 'say', text: '1' }))
  client.send(JSON.stringify({ type: 'leave' }))
  client.send(JSON.stringify({ type: 'say', text: '2' }))
  client.send(JSON.stringify({ type: 'leave' }))
  await waitFor(() => logs.find('no onMessage() handler').length > 0, 2000, 'the warning')
  await delay(20)
  t.same(got, ['say 1'], 'what follows the unhandled message waits behind it')
  t.equal(logs.find('no onMessage() handler', 40).length, 1, 'warned once')
  t.equal(logs.find('no onMessage() handler')[0]!.type, 'leave', 'naming the type')
  server!.on('message', () => { got.push('leave') })
  await waitFor(() => got.length === 4, 2000, 'the held messages')
  t.same(got, ['say 1', 'leave', 'say 2', 'leave'], 'a listener releases them, in order')
})

t.test('with async iteration, the iterator yields the types that have no handler', async (t) => {
  // late: the messages arrive before the handler and the iterator are set up (held, then taken by the iterator,
  // which hands those with a handler to it).
  for (const late of [false, true]) {
    const { app } = await typedApp(t)
    const order: string[] = []
    app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, async (socket) => {
      if (late) await delay(50)
      socket.onMessage('say', (message) => { order.push(`handler ${message.text}`) })
      for await (const message of socket) {
        order.push(`iterator ${message.type}`)
        if (order.length === 4) break
      }
      socket.close(1000)
    })
    await app.ready()
    const client = await app.injectWS('/chat')
    t.teardown(() => client.terminate())
    const done = closed(client)
    client.send(JSON.stringify({ type: 'join', nick: 'ada' }))
    client.send(JSON.stringify({ type: 'say', text: '1' }))
    client.send(JSON.stringify({ type: 'say', text: '2' }))
    client.send(JSON.stringify({ type: 'leave' }))
    t.equal((await done)[0], 1000)
    // Handlers run as their messages arrive; the iterator takes the others in order, at its own pace.
    t.same(order.filter((o) => o.startsWith('iterator')), ['iterator join', 'iterator leave'], `late=${late}: the iterator`)
    t.same(order.filter((o) => o.startsWith('handler')), ['handler 1', 'handler 2'], `late=${late}: the handler`)
  }
})

t.test('a handler that throws or rejects closes the socket with 1011 and is logged', async (t) => {
  for (const how of ['throws', 'rejects'] as const) {
    const { app, logs } = await typedApp(t)
    app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, (socket) => {
      if (how === 'throws') socket.onMessage('join', () => { throw new Error('boom') })
      else socket.onMessage('join', async () => { await delay(1); throw new Error('boom') })
    })
    await app.ready()
    const client = await app.injectWS('/chat')
    t.teardown(() => client.terminate())
    const done = closed(client)
    client.send(JSON.stringify({ type: 'join', nick: 'ada' }))
    t.equal((await done)[0], 1011, `a handler that ${how}: 1011`)
    const lines = logs.find(how === 'throws' ? "'join' message handler threw" : 'message handler rejected', 50)
    t.equal(lines.length, 1, `a handler that ${how}: logged`)
    t.equal(lines[0]?.err?.message, 'boom')
  }
})

t.test('misuse throws FST_WS_INVALID_HANDLER', async (t) => {
  const { app } = await typedApp(t)
  const errors: Array<string | undefined> = []
  const attempt = (fn: () => void): void => {
    try {
      fn()
      errors.push(undefined)
    } catch (err) {
      errors.push(`${(err as { code: string }).code}: ${(err as Error).message}`)
    }
  }
  app.get('/raw', { websocket: true }, (socket) => {
    attempt(() => (socket as unknown as { onMessage (type: string, h: () => void): void }).onMessage('join', () => {}))
  })
  app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, (socket) => {
    attempt(() => socket.onMessage('join', () => {}))
    attempt(() => socket.onMessage('join', () => {}))
    attempt(() => socket.onMessage('say', 'nope' as unknown as () => void))
    attempt(() => socket.onMessage(7 as unknown as 'say', () => {}))
  })
  await app.ready()
  const raw = await app.injectWS('/raw')
  t.teardown(() => raw.terminate())
  const chat = await app.injectWS('/chat')
  t.teardown(() => chat.terminate())
  await waitFor(() => errors.length === 5, 2000, 'the attempts')
  t.same(errors, [
    'FST_WS_INVALID_HANDLER: Invalid message handler: onMessage() needs a route with a messages.receive schema',
    undefined,
    "FST_WS_INVALID_HANDLER: Invalid message handler: 'join' already has a handler",
    "FST_WS_INVALID_HANDLER: Invalid message handler: the handler of 'say' must be a function",
    'FST_WS_INVALID_HANDLER: Invalid message handler: the type must be a string, got number'
  ])
})

t.test('Zod: dispatch on a discriminated union validated by the Zod compilers', async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  app.setValidatorCompiler(zodValidator)
  app.setSerializerCompiler(zodSerializer)
  const Inbound = z.discriminatedUnion('type', [
    z.object({ type: z.literal('ping'), at: z.number() }),
    z.object({ type: z.literal('echo'), text: z.string() })
  ])
  const Outbound = z.object({ type: z.string(), value: z.union([z.number(), z.string()]) })
  app.get('/zod', { websocket: { messages: { receive: Inbound, send: Outbound } } }, (socket) => {
    socket.onMessage('ping', (message) => { socket.sendMessage({ type: 'pong', value: (message as { at: number }).at }) })
    socket.onMessage('echo', (message) => { socket.sendMessage({ type: 'echo', value: (message as { text: string }).text }) })
  })
  await app.ready()
  const client = await app.injectWS('/zod')
  t.teardown(() => client.terminate())
  const replies = nextMessages(client, 2)
  client.send(JSON.stringify({ type: 'echo', text: 'hi' }))
  client.send(JSON.stringify({ type: 'ping', at: 5 }))
  t.same(await replies, [{ type: 'echo', value: 'hi' }, { type: 'pong', value: 5 }])
  const done = closed(client)
  client.send(JSON.stringify({ type: 'ping', at: 'now' }))
  t.equal((await done)[0], 1007, 'what Zod refuses reaches no handler')
})
