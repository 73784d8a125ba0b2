// The fastify-rfc6455.v1 envelope, server side, against a raw client writing the wire format by hand: messages,
// requests both ways (replies, error codes, timeouts, close), probes, resume from the client's positions, gaps,
// topic requests, and the opt-in (a socket without the subprotocol stays raw).
import t, { type Test } from 'tap'
import { buildApp, listen, RawWs, waitFor, frame } from '../helpers/index.js'
import { ENVELOPE_PROTOCOL, MemoryTopics, type WebSocket as AnySocket } from '../../lib/index.js'

type WebSocket = AnySocket<string, unknown, unknown>

const receive = {
  type: 'object',
  properties: { type: { type: 'string' }, n: { type: 'integer' } },
  required: ['type'],
  additionalProperties: false
} as const
const send = { type: 'object', properties: { type: { type: 'string' }, n: { type: 'integer' } } } as const

async function setup (t: Test, topics?: MemoryTopics) {
  const { app, logs } = await buildApp(topics === undefined ? {} : { topics })
  const sockets: WebSocket[] = []
  const waiters: Array<(s: WebSocket) => void> = []
  app.get('/e', { websocket: { protocols: [ENVELOPE_PROTOCOL, 'raw.v1'], messages: { receive, send } } }, (socket) => {
    sockets.push(socket as WebSocket)
    for (const w of waiters.splice(0)) w(socket as WebSocket)
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const open = async (protocol = ENVELOPE_PROTOCOL): Promise<{ client: RawWs, server: WebSocket }> => {
    const n = sockets.length
    const client = await RawWs.connect(port, '/e', { headers: { 'sec-websocket-protocol': protocol } })
    t.teardown(() => client.destroy())
    await waitFor(() => sockets.length > n, 2000, 'server socket')
    return { client, server: sockets[n]! }
  }
  return { app, logs, open }
}

const json = async (c: RawWs): Promise<unknown> => JSON.parse((await c.nextMessage()).payload.toString())
const sendJson = (c: RawWs, v: unknown): void => { c.write(frame(0x1, JSON.stringify(v))) }

t.test('messages in both directions, validated and serialized by the route schemas; probes', async (t) => {
  const { open } = await setup(t)
  const { client, server } = await open()
  t.equal(server.protocol, ENVELOPE_PROTOCOL)
  const got: unknown[] = []
  server.on('message', (m) => { got.push(m) })
  sendJson(client, { m: { type: 'hello', n: 1 } })
  await waitFor(() => got.length === 1, 2000, 'the message')
  t.same(got, [{ type: 'hello', n: 1 }], 'the inside of the envelope, validated')
  server.sendMessage({ type: 'hi', n: 2, secret: 'x' } as never)
  t.same(await json(client), { m: { type: 'hi', n: 2 } }, 'sent in an envelope, serialized by the send schema')
  sendJson(client, { p: 7 })
  t.same(await json(client), { P: 7 }, 'a probe is answered at once')
  sendJson(client, { m: { type: 'bad', n: 'one' } })
  const close = await client.nextFrame(0x8)
  t.equal(close.payload.readUInt16BE(0), 1007, 'an invalid message closes with 1007, as without the envelope')
})

t.test('a malformed envelope is an invalid message (1007)', async (t) => {
  const { open } = await setup(t)
  for (const bad of [{ x: 1 }, [1], { q: 0, m: {} }, { r: 'a' }, { resume: { room: { offset: 1 } } }, { p: 'x' }]) {
    const { client } = await open()
    sendJson(client, bad)
    const close = await client.nextFrame(0x8)
    t.equal(close.payload.readUInt16BE(0), 1007, JSON.stringify(bad))
  }
})

t.test('requests from the client: replies, "invalid", "failed", and requests that wait for the handler', async (t) => {
  const { open, logs } = await setup(t)
  const { client, server } = await open()
  sendJson(client, { q: 1, m: { type: 'early', n: 1 } }) // before any handler
  await new Promise((resolve) => setTimeout(resolve, 30))
  server.onRequest(async (message) => {
    const m = message as unknown as { type: string, n?: number }
    if (m.type === 'boom') throw new Error('handler failed')
    return { type: 'answer', n: (m.n ?? 0) + 1 }
  })
  t.same(await json(client), { r: 1, m: { type: 'answer', n: 2 } }, 'a request that came before the handler is answered')
  sendJson(client, { q: 2, m: { type: 'x', n: 41 } })
  t.same(await json(client), { r: 2, m: { type: 'answer', n: 42 } })
  sendJson(client, { q: 3, m: { type: 'x', n: 'nope' } })
  t.same(await json(client), { r: 3, e: 'invalid' }, 'the schema refused it; the socket stays open')
  sendJson(client, { q: 4, m: { type: 'boom' } })
  t.same(await json(client), { r: 4, e: 'failed' })
  t.ok(logs.find('request handler failed').length > 0, 'logged')
  t.throws(() => server.onRequest(() => ({ type: 'x' })), { code: 'FST_WS_INVALID_HANDLER' }, 'one handler per socket')
})

t.test('requests from the server: reply, error code, invalid reply, timeout, close before the reply', async (t) => {
  const { open } = await setup(t)
  const { client, server } = await open()
  const first = server.request({ type: 'q1' })
  t.same(await json(client), { q: 1, m: { type: 'q1' } })
  sendJson(client, { r: 1, m: { type: 'a1', n: 5 } })
  t.same(await first, { type: 'a1', n: 5 }, 'resolved with the validated reply')
  const refused = server.request({ type: 'q2' })
  await json(client)
  sendJson(client, { r: 2, e: 'no-handler' })
  await t.rejects(refused, { code: 'FST_WS_REQUEST_FAILED', message: /no-handler/ })
  const invalid = server.request({ type: 'q3' })
  await json(client)
  sendJson(client, { r: 3, m: { n: 'x' } })
  await t.rejects(invalid, { code: 'FST_WS_REQUEST_FAILED', message: /invalid reply/ })
  await t.rejects(server.request({ type: 'q4' }, { timeout: 50 }), { code: 'FST_WS_REQUEST_TIMEOUT' })
  await json(client)
  sendJson(client, { r: 4, m: { type: 'late' } }) // nobody waits for it any more: ignored
  sendJson(client, { r: 99, m: { type: 'unknown' } })
  const pending = server.request({ type: 'q5' })
  await json(client)
  client.destroy()
  await t.rejects(pending, { code: 'FST_WS_REQUEST_CLOSED' }, 'the socket closed first')
  await t.rejects(server.request({ type: 'after' }), { code: 'FST_WS_NOT_OPEN' })
})

t.test('opt-in per socket: without the subprotocol the same route stays raw', async (t) => {
  const { open } = await setup(t)
  const { client, server } = await open('raw.v1')
  t.equal(server.protocol, 'raw.v1')
  server.sendMessage({ type: 'plain' })
  t.same(await json(client), { type: 'plain' }, 'no envelope')
  t.throws(() => server.request({ type: 'x' }), { code: 'FST_WS_NO_ENVELOPE' })
  t.throws(() => server.onRequest(() => ({ type: 'x' })), { code: 'FST_WS_NO_ENVELOPE' })
  t.same([...await server.clientPositions()], [])
})

t.test('a route that lists the envelope without a receive schema is refused at registration', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  t.throws(() => app.get('/x', { websocket: { protocols: [ENVELOPE_PROTOCOL] } }, () => {}), { code: 'FST_WS_INVALID_ROUTE', message: /receive schema/ })
})

t.test('resume from the client\'s positions: replay in JSON envelopes (whatever the broker\'s envelope), a gap frame when it cannot', async (t) => {
  const topics = new MemoryTopics() // envelope 'none': raw sockets get raw payloads
  const { app } = await buildApp({ topics })
  const results: unknown[] = []
  app.get('/r', { websocket: { protocols: [ENVELOPE_PROTOCOL], messages: { receive, send } } }, async (socket) => {
    const positions = await socket.clientPositions()
    results.push(await socket.subscribe('room', { since: positions.get('room') ?? 'history' }))
  })
  app.get('/raw', { websocket: true }, (socket) => { void socket.subscribe('room') })
  const port = await listen(app)
  t.teardown(() => app.close())
  const raw = await RawWs.connect(port, '/raw')
  t.teardown(() => raw.destroy())
  await waitFor(() => app.websocketServer.subscriberCount('room') === 1, 2000, 'raw subscriber')
  const p = await app.websocketServer.publish('room', '{"type":"one"}')
  await app.websocketServer.publish('room', '{"type":"two"}')
  t.equal((await raw.nextMessage()).payload.toString(), '{"type":"one"}', 'a raw socket gets the raw payload')

  const open = async (resume: unknown): Promise<RawWs> => {
    const c = await RawWs.connect(port, '/r', { headers: { 'sec-websocket-protocol': ENVELOPE_PROTOCOL } })
    t.teardown(() => c.destroy())
    sendJson(c, { resume })
    return c
  }
  const resumed = await open({ room: { epoch: p.epoch, offset: 1 } })
  t.same(await json(resumed), { topic: 'room', epoch: p.epoch, offset: 2, data: { type: 'two' } }, 'only what it missed, in the JSON envelope')
  const fresh = await open({})
  t.same([await json(fresh), await json(fresh)].map((e) => (e as { offset: number }).offset), [1, 2], 'no position: the history')
  const stale = await open({ room: { epoch: 'gone', offset: 1 } })
  t.same(await json(stale), { gap: { topic: 'room', reason: 'epoch-changed', epoch: p.epoch, offset: 2 } }, 'told, as a gap frame')
  await app.websocketServer.publish('room', '{"type":"three"}')
  for (const c of [resumed, fresh, stale]) t.match(await json(c), { offset: 3, data: { type: 'three' } }, 'then live, enveloped')
  t.match(results, [{ status: 'recovered', replayed: 1 }, { status: 'recovered', replayed: 2 }, { status: 'gap', reason: 'epoch-changed' }])
})

t.test('a request to a topic: one outcome per subscriber that speaks the envelope', async (t) => {
  const { app, open } = await setup(t)
  const a = await open()
  const b = await open()
  const plain = await open('raw.v1')
  for (const s of [a.server, b.server, plain.server]) await s.subscribe('team')
  const asked = app.websocketServer.request('team', { type: 'ready?' }, { timeout: 200 })
  t.same(await json(a.client), { q: 1, m: { type: 'ready?' } })
  t.same(await json(b.client), { q: 1, m: { type: 'ready?' } })
  sendJson(a.client, { r: 1, m: { type: 'yes' } }) // b never answers
  const outcomes = await asked
  t.equal(outcomes.length, 2, 'the raw socket is not asked')
  const byA = outcomes.find((o) => o.socket === a.server)!
  const byB = outcomes.find((o) => o.socket === b.server)!
  t.match(byA, { ok: true, reply: { type: 'yes' } })
  t.match(byB, { ok: false, error: { code: 'FST_WS_REQUEST_TIMEOUT' } })
})
