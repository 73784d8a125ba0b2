// The seams of topics and the envelope: broker to socket when the consumer stops reading (live fan-out, and a
// resume's replay burst), a peer that vanishes in the middle of a replay, a user listener on the gap event that
// throws, and the bounds on requests waiting for a handler or for a reply.
import t from 'tap'
import { buildApp, listen, RawWs, waitFor, frame } from '../helpers/index.js'
import { settledMemory, mib, MiB } from '../helpers/memory.js'
import { ENVELOPE_PROTOCOL, MemoryTopics, type WebSocket } from '../../lib/index.js'
import { emitTopicGap } from '../../lib/socket/websocket.js'

const KiB = Buffer.alloc(1024, 0x61)

t.test('broker to socket: a subscriber that stops reading is closed with 1008 at maxBufferedAmount; the others get everything; memory stays bounded', async (t) => {
  const { app } = await buildApp({ maxBufferedAmount: 256 * 1024, sendHighWaterMark: 64 * 1024, closeTimeout: 300 })
  const servers: WebSocket[] = []
  app.get('/t', { websocket: true }, async (socket) => { servers.push(socket); await socket.subscribe('flood') })
  const port = await listen(app)
  t.teardown(() => app.close())
  const stalled = await RawWs.connect(port, '/t', { keepMessages: false })
  const readers = [await RawWs.connect(port, '/t', { keepMessages: false }), await RawWs.connect(port, '/t', { keepMessages: false })]
  t.teardown(() => { stalled.destroy(); for (const r of readers) r.destroy() })
  await waitFor(() => app.websocketServer.subscriberCount('flood') === 3, 2000, 'three subscribers')
  let counted = 0
  for (const r of readers) r.on('message', () => { counted++ })
  stalled.socket.pause() // reads nothing more
  const errors: string[] = []
  servers[0]!.on('error', (err) => { errors.push(err.code) })
  const before = await settledMemory()
  const N = 20_000
  for (let i = 1; i <= N; i++) {
    await app.websocketServer.publish('flood', KiB)
    // Paced by the readers (they keep up within 100 messages), so only the stalled one falls behind.
    if (i % 100 === 0) await waitFor(() => counted >= 2 * (i - 100), 5000, 'the readers keep up', 1)
  }
  await waitFor(() => counted === 2 * N, 20_000, 'both readers get all 20,000')
  const after = await settledMemory()
  t.same(errors, ['FST_WS_SLOW_CONSUMER'], 'the stalled subscriber was failed as a slow consumer')
  await waitFor(() => app.websocketServer.subscriberCount('flood') === 2, 3000, 'the stalled subscriber leaves the topic (after closeTimeout: it never answers the close)')
  t.pass('and it left the topic')
  const grew = (after.heapUsed + after.arrayBuffers) - (before.heapUsed + before.arrayBuffers)
  t.comment(`20,000 x 1 KiB published, one subscriber not reading: heap + buffers +${mib(grew)}`)
  t.ok(grew < 16 * MiB, `bounded by maxBufferedAmount, not by what was published: +${mib(grew)}`)
})

t.test('a resume whose replay is more than the socket may buffer: the replay goes through the same bound (1008)', async (t) => {
  const { app } = await buildApp({ maxBufferedAmount: 256 * 1024, sendHighWaterMark: 64 * 1024, topics: new MemoryTopics({ history: { size: 5000 } }) })
  const results: unknown[] = []
  app.get('/t', { websocket: true }, async (socket) => { results.push(await socket.subscribe('log', { since: 'history' })) })
  const port = await listen(app)
  t.teardown(() => app.close())
  for (let i = 0; i < 5000; i++) await app.websocketServer.publish('log', KiB)
  const request = Buffer.from(`GET /t HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`)
  const slow = await RawWs.connect(port, '/t', { request, keepMessages: false })
  t.teardown(() => slow.destroy())
  slow.socket.pause()
  await waitFor(() => app.websocketServer.clients.size === 0, 5000, 'the non-reading resumer closed')
  t.match(results, [{ status: 'recovered', replayed: 5000 }], 'the replay was written (into the outbound buffer), then the bound applied')
})

t.test('a peer that vanishes in the middle of a replay: no crash, the topic and the counts are released', async (t) => {
  const { app } = await buildApp({ topics: new MemoryTopics({ history: { size: 2000 } }) })
  app.get('/t', { websocket: true }, async (socket) => { await socket.subscribe('log', { since: 'history' }) })
  const port = await listen(app)
  t.teardown(() => app.close())
  for (let i = 0; i < 2000; i++) await app.websocketServer.publish('log', KiB)
  for (let k = 0; k < 20; k++) {
    const c = await RawWs.connect(port, '/t', { keepMessages: false })
    c.destroy() // gone while its 2 MiB replay is being written
  }
  await waitFor(() => app.websocketServer.clients.size === 0, 3000, 'every socket released')
  t.equal(app.websocketServer.subscriberCount('log'), 0)
})

t.test('a topicGap listener that throws closes its socket with 1011, logged; the process does not see it', async (t) => {
  const { app, logs } = await buildApp()
  const servers: WebSocket[] = []
  app.get('/t', { websocket: true }, (socket) => {
    servers.push(socket)
    socket.on('topicGap', () => { throw new Error('listener bug') })
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const c = await RawWs.connect(port, '/t')
  t.teardown(() => c.destroy())
  await waitFor(() => servers.length === 1, 2000, 'socket')
  emitTopicGap(servers[0]!, { topic: 'x', reason: 'epoch-changed', epoch: 'e', offset: 0 })
  const close = await c.nextFrame(0x8)
  t.equal(close.payload.readUInt16BE(0), 1011)
  t.ok(logs.find('topicGap listener threw').length > 0, 'logged')
})

t.test('envelope bounds: requests waiting for a handler (1,000), requests waiting for a reply (1,000)', async (t) => {
  const receive = { type: 'object', properties: { n: { type: 'integer' } } } as const
  const { app } = await buildApp()
  const servers: Array<WebSocket<string, unknown, unknown>> = []
  app.get('/e', { websocket: { protocols: [ENVELOPE_PROTOCOL], messages: { receive } } }, (socket) => { servers.push(socket as WebSocket<string, unknown, unknown>) })
  const port = await listen(app)
  t.teardown(() => app.close())
  const c = await RawWs.connect(port, '/e', { headers: { 'sec-websocket-protocol': ENVELOPE_PROTOCOL } })
  t.teardown(() => c.destroy())
  await waitFor(() => servers.length === 1, 2000, 'socket')
  // 1,001 requests pipelined before any handler: the last is answered 'no-handler' at once, the rest wait.
  const burst = Buffer.concat(Array.from({ length: 1001 }, (_, i) => frame(0x1, JSON.stringify({ q: i + 1, m: { n: i } }))))
  c.write(burst)
  const refused = JSON.parse((await c.nextMessage()).payload.toString()) as unknown
  t.same(refused, { r: 1001, e: 'no-handler' }, 'past the bound, refused rather than held')
  servers[0]!.onRequest((m) => m)
  const answers: unknown[] = []
  for (let i = 0; i < 1000; i++) answers.push(JSON.parse((await c.nextMessage()).payload.toString()))
  t.same(answers[0], { r: 1, m: { n: 0 } })
  t.same(answers[999], { r: 1000, m: { n: 999 } }, 'the 1,000 that waited are answered in order')
  // 1,000 unanswered requests towards the client: the next one is refused.
  const pending = Array.from({ length: 1000 }, (_, i) => servers[0]!.request({ n: i }, { timeout: 60_000 }))
  await t.rejects(servers[0]!.request({ n: -1 }), { code: 'FST_WS_REQUEST_FAILED', message: /1000 requests already wait/ })
  c.destroy()
  const settled = await Promise.allSettled(pending)
  t.ok(settled.every((s) => s.status === 'rejected' && (s.reason as { code: string }).code === 'FST_WS_REQUEST_CLOSED'), 'the peer vanished: every pending request rejects with FST_WS_REQUEST_CLOSED')
})
