/**
 * Route message schemas (`websocket.messages`): compiled with the instance's own compilers, inbound JSON parsed
 * and validated before any listener sees it, outbound serialized by the instance's serializer (undeclared fields
 * left out), refusals with the RFC's close codes or kept open with the errors, and the three usual providers:
 * plain JSON Schema (ajv), TypeBox, Zod.
 */
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import Fastify from 'fastify'
import { Type } from 'typebox'
import { z } from 'zod'
import { serializerCompiler as zodSerializer, validatorCompiler as zodValidator } from 'fastify-type-provider-zod'
import websocket, { type WebSocket } from '../../lib/index.js'
import { buildApp, listen, RawWs, frame, waitFor, handshake } from '../helpers/index.js'

const ChatIn = {
  oneOf: [
    { type: 'object', properties: { type: { const: 'join' }, nick: { type: 'string', minLength: 1, maxLength: 20 } }, required: ['type', 'nick'], additionalProperties: false },
    { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string', maxLength: 500 } }, required: ['type', 'text'], additionalProperties: false }
  ]
} as const

const ChatOut = {
  type: 'object',
  properties: { type: { type: 'string' }, text: { type: 'string' } },
  required: ['type']
} as const

t.test('JSON Schema (ajv): valid messages reach the handler parsed, invalid ones close with 1007, binary with 1003', async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  const seen: unknown[] = []
  const errors: string[] = []
  app.get('/chat', { websocket: { messages: { receive: ChatIn, send: ChatOut } } }, (socket) => {
    socket.on('message', (message) => {
      seen.push(message)
      socket.sendMessage({ type: 'ack', text: 'ok', secret: 'must not leak' })
    })
    socket.on('error', (err) => errors.push(`${err.code} ${err.closeCode ?? ''}`))
  })
  const port = await listen(app)

  const ws = await RawWs.connect(port, '/chat')
  t.teardown(() => ws.destroy())
  ws.send(JSON.stringify({ type: 'join', nick: 'ada' }))
  const reply = await ws.nextMessage()
  t.same(JSON.parse(reply.payload.toString()), { type: 'ack', text: 'ok' }, 'the reply is serialized by the send schema: the undeclared field is left out')
  t.same(seen, [{ type: 'join', nick: 'ada' }], 'the handler got the parsed message')

  for (const [what, bytes, code] of [
    ['a message that does not match', frame(0x1, JSON.stringify({ type: 'join', nick: '' })), 1007],
    ['text that is not JSON', frame(0x1, '{"type": "say",'), 1007],
    ['a binary frame', frame(0x2, Buffer.from('{}')), 1003]
  ] as const) {
    const bad = await RawWs.connect(port, '/chat')
    t.teardown(() => bad.destroy())
    bad.write(bytes)
    await bad.closed()
    t.equal(bad.closeCode, code, `${what}: closed with ${code}`)
  }
  t.equal(seen.length, 1, 'no invalid message reached the handler')
  t.same(errors, ['FST_WS_INVALID_MESSAGE 1007', 'FST_WS_INVALID_MESSAGE 1007', 'FST_WS_INVALID_MESSAGE 1003'], 'each reported as an error with its close code')
})

t.test("onInvalid: 'emit' keeps the socket open and hands the validation errors to the route, which can reply", async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  app.get('/chat', { websocket: { messages: { receive: ChatIn, onInvalid: 'emit' } } }, (socket) => {
    socket.on('message', (message) => { socket.sendMessage({ got: message }) })
    socket.on('invalid', (err) => {
      socket.sendMessage({ error: err.reason, details: Array.isArray(err.validation) ? err.validation.length : String(err.validation) })
    })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/chat')
  t.teardown(() => ws.destroy())
  // (Fastify's ajv defaults apply, as for bodies: 7 would be coerced to "7"; an object cannot be.)
  ws.send(JSON.stringify({ type: 'say', text: { not: 'a string' } }))
  const first = JSON.parse((await ws.nextMessage()).payload.toString()) as { error: string, details: number }
  t.equal(first.error, 'schema', 'the route heard of the schema failure')
  t.ok(first.details > 0, 'with ajv\'s errors')
  ws.send('not json')
  t.equal((JSON.parse((await ws.nextMessage()).payload.toString()) as { error: string }).error, 'json')
  ws.send(JSON.stringify({ type: 'say', text: 'still open' }))
  t.same(JSON.parse((await ws.nextMessage()).payload.toString()), { got: { type: 'say', text: 'still open' } }, 'and the socket stayed open')
})

t.test('oversized messages still close with 1009 before any parsing', async (t) => {
  const { app } = await buildApp({ maxPayload: 64 })
  t.teardown(() => app.close())
  app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, () => {})
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/chat')
  t.teardown(() => ws.destroy())
  ws.send(JSON.stringify({ type: 'say', text: 'x'.repeat(100) }))
  await ws.closed()
  t.equal(ws.closeCode, 1009)
})

t.test('held messages and async iteration yield parsed messages', async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  let server: WebSocket<string, unknown> | null = null
  app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, (socket) => { server = socket as WebSocket<string, unknown> })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/chat')
  t.teardown(() => ws.destroy())
  ws.send(JSON.stringify({ type: 'join', nick: 'a' }))
  ws.send(JSON.stringify({ type: 'say', text: 'b' }))
  await waitFor(() => server !== null, 2000, 'handler')
  const got: unknown[] = []
  for await (const m of server!) {
    got.push(m)
    if (got.length === 2) break
  }
  t.same(got, [{ type: 'join', nick: 'a' }, { type: 'say', text: 'b' }])
})

t.test('a schema the compiler refuses fails app.ready() with FST_WS_INVALID_SCHEMA naming the route', async (t) => {
  const app = Fastify()
  await app.register(websocket, { ports: 'any' })
  app.get('/broken', { websocket: { messages: { receive: { type: 'object', properties: { a: { type: 'no-such-type' } } } } } }, () => {})
  await t.rejects(async () => { await app.ready() }, { code: 'FST_WS_INVALID_SCHEMA', message: /\/broken/ })
})

t.test('option shape errors are FST_WS_INVALID_OPTION at registration', async (t) => {
  for (const [messages, name] of [
    [{}, 'websocket.messages'],
    [{ receive: 'a string' }, 'websocket.messages.receive'],
    [{ receive: {}, onInvalid: 'ignore' }, 'websocket.messages.onInvalid'],
    [{ receive: {}, other: 1 }, 'websocket.messages.other']
  ] as const) {
    const app = Fastify()
    await app.register(websocket, { ports: 'any' })
    t.throws(() => app.get('/x', { websocket: { messages: messages as never } }, () => {}), { code: 'FST_WS_INVALID_OPTION', message: new RegExp(name.replace(/\./g, '\\.')) })
    await app.close()
  }
})

t.test('TypeBox schemas (the default ajv compiler)', async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  const In = Type.Object({ n: Type.Integer({ minimum: 0 }) }, { additionalProperties: false })
  const Out = Type.Object({ doubled: Type.Integer() })
  app.get('/tb', { websocket: { messages: { receive: In, send: Out } } }, (socket) => {
    socket.on('message', (m) => { socket.sendMessage({ doubled: (m as { n: number }).n * 2, extra: true }) })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/tb')
  t.teardown(() => ws.destroy())
  ws.send(JSON.stringify({ n: 21 }))
  t.same(JSON.parse((await ws.nextMessage()).payload.toString()), { doubled: 42 })
  ws.send(JSON.stringify({ n: -1 }))
  await ws.closed()
  t.equal(ws.closeCode, 1007, 'a value the TypeBox schema refuses closes 1007')
})

t.test('Zod schemas through fastify-type-provider-zod\'s compilers (instance-level, as that provider sets them)', async (t) => {
  const app = Fastify()
  app.setValidatorCompiler(zodValidator)
  app.setSerializerCompiler(zodSerializer)
  await app.register(websocket, { ports: 'any' })
  t.teardown(() => app.close())
  const In = z.object({ word: z.string().min(2) })
  const Out = z.object({ upper: z.string() })
  app.get('/zod', { websocket: { messages: { receive: In, send: Out, onInvalid: 'emit' } } }, (socket) => {
    socket.on('message', (m) => { socket.sendMessage({ upper: (m as { word: string }).word.toUpperCase() }) })
    socket.on('invalid', (err) => { socket.sendMessage({ upper: `INVALID:${err.reason}` }) })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/zod')
  t.teardown(() => ws.destroy())
  ws.send(JSON.stringify({ word: 'zod' }))
  t.same(JSON.parse((await ws.nextMessage()).payload.toString()), { upper: 'ZOD' })
  ws.send(JSON.stringify({ word: 'z' }))
  t.same(JSON.parse((await ws.nextMessage()).payload.toString()), { upper: 'INVALID:schema' }, 'Zod\'s refusal reached the invalid listener')
})

t.test('sendMessage without a send schema uses JSON.stringify; on a closed socket it reports FST_WS_NOT_OPEN', async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  let server: WebSocket | null = null
  app.get('/plain', { websocket: true }, (socket) => {
    server = socket
    socket.sendMessage({ hello: 'world' })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/plain')
  t.same(JSON.parse((await ws.nextMessage()).payload.toString()), { hello: 'world' })
  ws.close(1000)
  await ws.closed()
  await waitFor(() => server!.readyState === server!.CLOSED, 2000, 'closed')
  const err = await new Promise<Error | null | undefined>((resolve) => { server!.sendMessage({ late: true }, resolve) })
  t.equal((err as { code?: string }).code, 'FST_WS_NOT_OPEN')
})

t.test('a typed topic channel serializes once with its schema (undeclared fields left out) and frames once for every subscriber', async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  const news = app.websocketServer.channel({ type: 'object', properties: { headline: { type: 'string' } }, required: ['headline'] })
  app.get('/news', { websocket: true }, (socket) => { socket.subscribe('news') })
  const port = await listen(app)
  const a = await RawWs.connect(port, '/news')
  const b = await RawWs.connect(port, '/news')
  t.teardown(() => { a.destroy(); b.destroy() })
  await waitFor(() => app.websocketServer.subscriberCount('news') === 2, 2000, 'two subscribers')
  t.match(await news.publish('news', { headline: 'typed', internal: 'secret' } as never), { topic: 'news', offset: 1 }, 'published')
  for (const ws of [a, b]) {
    const m = await ws.nextMessage()
    t.equal(m.opcode, 0x1, 'a text frame')
    t.same(JSON.parse(m.payload.toString()), { headline: 'typed' }, 'the undeclared field is not published')
  }
  t.throws(() => app.websocketServer.channel({ type: 'no-such-type' }), { code: 'FST_WS_INVALID_SCHEMA' })
})

t.test("the instance's ajv options apply to message schemas even when no route has a schema yet (Fastify builds its default compiler lazily)", async (t) => {
  for (const [coerceTypes, expected] of [[undefined, 'accepted'], [false, 1007]] as const) {
    const app = Fastify(coerceTypes === undefined ? {} : { ajv: { customOptions: { coerceTypes } } })
    await app.register(websocket, { ports: 'any' })
    t.teardown(() => app.close())
    app.get('/chat', { websocket: { messages: { receive: ChatIn } } }, (socket) => {
      socket.on('message', () => { socket.send('accepted') })
    })
    const port = await listen(app)
    const ws = await RawWs.connect(port, '/chat')
    t.teardown(() => ws.destroy())
    ws.send(JSON.stringify({ type: 'say', text: 7 }))
    const outcome = expected === 'accepted'
      ? (await ws.nextMessage()).payload.toString()
      : await ws.closed().then(() => ws.closeCode)
    t.equal(outcome, expected, `coerceTypes ${String(coerceTypes)}: a number where a string is expected is ${String(expected)}`)
  }
})

/**
 * The raw bytes of the frames a server sends: header and payload of each, from a plain TCP client. A frame must
 * be final, unmasked, and use the shortest length encoding (RFC 6455 §5.2).
 */
async function rawClient (t: Test, port: number, path: string): Promise<{ frames: Array<{ opcode: number, payload: Buffer }>, bad: string[] }> {
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const frames: Array<{ opcode: number, payload: Buffer }> = []
  const bad: string[] = []
  let buf = Buffer.alloc(0)
  let upgraded = false
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk])
    if (!upgraded) {
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      upgraded = true
      buf = buf.subarray(end + 4)
    }
    for (;;) {
      if (buf.length < 2) return
      let length = buf[1]! & 0x7f
      let p = 2
      if (length === 126) {
        if (buf.length < 4) return
        length = buf.readUInt16BE(2)
        p = 4
        if (length < 126) bad.push(`a ${length}-byte payload with a 16-bit length`)
      } else if (length === 127) {
        if (buf.length < 10) return
        length = Number(buf.readBigUInt64BE(2))
        p = 10
        if (length < 65536) bad.push(`a ${length}-byte payload with a 64-bit length`)
      }
      if (buf.length < p + length) return
      if ((buf[0]! & 0xf0) !== 0x80) bad.push(`first byte 0x${buf[0]!.toString(16)}`)
      if ((buf[1]! & 0x80) !== 0) bad.push('a masked frame')
      frames.push({ opcode: buf[0]! & 0x0f, payload: Buffer.from(buf.subarray(p, p + length)) })
      buf = buf.subarray(p + length)
    }
  })
  await once(socket, 'connect')
  socket.write(handshake(path, port))
  await waitFor(() => upgraded, 2000, 'the 101')
  socket.write(frame(0x1, '"go"'))
  return { frames, bad }
}

t.test('sendMessage frames: exact bytes for every header size, many in one tick, mixed with other frames and other sockets', async (t) => {
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  // JSON text of 2 to 20,002 bytes: around the 125/126 header boundary in ASCII and in multi-byte UTF-8 (45 euro signs
  // are 47 units of JSON but 137 bytes), up to and past the largest text the sender encodes into its shared slab.
  const texts = ['', 'x'.repeat(121), 'x'.repeat(123), 'x'.repeat(124), '€'.repeat(41), '€'.repeat(45), 'é'.repeat(1362),
    '€'.repeat(1362), 'y'.repeat(1363), 'z'.repeat(20000)]
  // Enough in one tick to pass the 64 KiB batch and several 32 KiB slabs.
  const many = Array.from({ length: 1500 }, (_, i) => `${i}:${'m'.repeat(96)}`)
  const sockets: Array<WebSocket<string, unknown>> = []
  let callbacks = 0
  app.get('/frames', { websocket: { messages: { receive: { type: 'string' } } } }, (socket) => {
    sockets.push(socket)
    socket.on('message', () => {
      if (sockets.length < 2 || socket !== sockets[1]) return
      const [a, b] = sockets as [WebSocket<string, unknown>, WebSocket<string, unknown>]
      // All in one tick: texts, a binary frame between them, then the two sockets' texts interleaved.
      for (const text of texts) a.sendMessage(text, () => { callbacks++ })
      a.send(Buffer.from([1, 2, 3]), () => { callbacks++ })
      a.sendMessage('after binary', () => { callbacks++ })
      for (const text of many) {
        a.sendMessage(text, () => { callbacks++ })
        b.sendMessage(text, () => { callbacks++ })
      }
    })
  })
  const port = await listen(app)
  const first = await rawClient(t, port, '/frames')
  await waitFor(() => sockets.length === 1, 2000, 'the first socket')
  const second = await rawClient(t, port, '/frames')
  const expectedA = [...texts.map((s) => JSON.stringify(s)), Buffer.from([1, 2, 3]), '"after binary"', ...many.map((s) => JSON.stringify(s))]
  const expectedB = many.map((s) => JSON.stringify(s))
  await waitFor(() => first.frames.length === expectedA.length && second.frames.length === expectedB.length, 5000, 'every frame')
  t.same(first.bad, [], 'first socket: every frame final, unmasked, with the shortest length')
  t.same(second.bad, [], 'second socket: likewise')
  const decode = (f: { opcode: number, payload: Buffer }): string | Buffer => f.opcode === 0x1 ? f.payload.toString() : f.payload
  t.same(first.frames.map(decode), expectedA, 'first socket: every message, in order, byte for byte')
  t.same(second.frames.map(decode), expectedB, 'second socket: likewise')
  t.same(first.frames.map((f) => f.opcode), expectedA.map((e) => typeof e === 'string' ? 0x1 : 0x2), 'text as text, binary as binary')
  await waitFor(() => callbacks === expectedA.length + expectedB.length, 2000, 'every write callback')
  t.pass('every write callback was called')
})
