// Reconnect: after a server restart (with the topic positions resumed), backoff bounds with an injected random
// and clock, the reset after a stable connection, maxAttempts, and the closes that stop it for good.
import t from 'tap'
import { createServer } from 'node:net'
import { connect, type Client, type StopReason, type Gap, type TopicInfo } from '../../lib/client/index.js'
import { NodeWebSocket } from '../../lib/client/node-transport.js'
import { buildApp, within, waitFor } from '../helpers/index.js'
import { startEnvelopeServer, FakeClock, type Frame } from './envelope-server.js'

function next<T> (client: Client, event: 'open' | 'stopped' | 'gap', ms = 3000): Promise<T> {
  return within(new Promise<T>((resolve) => {
    const listener = (value?: unknown): void => { client.off(event, listener); resolve(value as T) }
    client.on(event, listener)
  }), ms, `the client's '${event}'`)
}

/** A port nobody listens on (bound, then released). */
async function deadPort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise((resolve) => s.close(resolve))
  return port
}

t.test('server restart: the client reconnects, sends {"resume"} with its last positions first, then the outbox', async (t) => {
  let server = await startEnvelopeServer()
  const port = server.port
  const reconnecting: Array<[number, number]> = []
  const client = connect(`ws://127.0.0.1:${port}/env`, { WebSocket: NodeWebSocket, reconnect: { base: 20, cap: 100 } })
  t.teardown(async () => { client.close(); await server.close() })
  client.on('reconnecting', (attempt, delay) => { reconnecting.push([attempt, delay]) })
  const got: Array<[unknown, TopicInfo | undefined]> = []
  client.on('message', (m, topic) => { got.push([m, topic]) })
  await next(client, 'open')
  await waitFor(() => server.resumes.length === 1, 2000, 'the resume frame')
  t.same(server.resumes, [{}], 'the first frame is a resume, empty without positions')
  server.push({ topic: 'room:1', epoch: 'e1', offset: 1, data: { text: 'a' } })
  server.push({ topic: 'room:1', epoch: 'e1', offset: 2, data: { text: 'b' } })
  server.push({ topic: 'room:2', epoch: 'x', offset: 7, data: 'c' })
  server.push({ topic: 'room:1', epoch: 'e1', offset: 2, data: { text: 'b' } })
  await waitFor(() => got.length === 3, 2000, 'three topic messages')
  t.same(got.map(([m]) => m), [{ text: 'a' }, { text: 'b' }, 'c'], 'a repeated offset is not delivered twice')
  t.match(got[1]![1], { topic: 'room:1', epoch: 'e1', offset: 2 })
  t.same(client.positions, { 'room:1': { epoch: 'e1', offset: 2 }, 'room:2': { epoch: 'x', offset: 7 } })

  await server.close()
  await waitFor(() => client.state === 'waiting' || client.state === 'connecting', 2000, 'the drop')
  client.send({ while: 'down' })
  server = await startEnvelopeServer({ port })
  await next(client, 'open', 5000)
  await waitFor(() => server.frames.length === 1, 2000, 'resume and the outbox')
  t.same(server.resumes, [{ 'room:1': { epoch: 'e1', offset: 2 }, 'room:2': { epoch: 'x', offset: 7 } }], 'the resume first')
  t.same(server.frames, [{ m: { while: 'down' } }], 'then the outbox')
  t.ok(reconnecting.length >= 1)
  t.equal(reconnecting[0]![0], 1, 'attempts count from 1')
  for (const [attempt, delay] of reconnecting) t.ok(delay >= 0 && delay <= Math.min(100, 20 * 2 ** (attempt - 1)), `attempt ${attempt}: ${delay} ms`)

  // A gap clears the position; the next message records it again, and the next resume starts after that.
  const gap = next<Gap>(client, 'gap')
  server.push({ gap: { topic: 'room:1', reason: 'epoch-changed', epoch: 'e2', offset: 5 } })
  t.same(await gap, { topic: 'room:1', reason: 'epoch-changed', epoch: 'e2', offset: 5 })
  server.push({ topic: 'room:1', epoch: 'e2', offset: 6, data: 'd' })
  await waitFor(() => got.length === 4, 2000, 'the message after the gap')
  const reopened = next(client, 'open', 5000)
  server.sockets[0]!.terminate()
  await reopened
  await waitFor(() => server.resumes.length === 2, 2000, 'the second resume')
  t.same(server.resumes[1], { 'room:1': { epoch: 'e2', offset: 6 }, 'room:2': { epoch: 'x', offset: 7 } })
})

t.test('positions given to connect() are resumed on the first connection', async (t) => {
  const server = await startEnvelopeServer()
  const client = connect(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket, positions: { a: { epoch: 'e', offset: 3 } } })
  t.teardown(async () => { client.close(); await server.close() })
  await next(client, 'open')
  await waitFor(() => server.resumes.length === 1, 2000, 'resume')
  t.same(server.resumes, [{ a: { epoch: 'e', offset: 3 } }])
})

t.test('backoff: delay = random * min(cap, base * 2^(attempt-1)), full jitter, then max-attempts stops', async (t) => {
  const port = await deadPort()
  for (const r of [0.999, 0.5, 0]) {
    const clock = new FakeClock()
    const delays: number[] = []
    const client = connect(`ws://127.0.0.1:${port}/`, {
      WebSocket: NodeWebSocket, clock, random: () => r, reconnect: { base: 100, cap: 1000, maxAttempts: 6 }
    })
    t.teardown(() => client.close())
    client.on('reconnecting', (_attempt, delay) => { delays.push(delay); queueMicrotask(() => clock.advance(delay)) })
    const stopped = await next<StopReason>(client, 'stopped')
    t.same(stopped, { reason: 'max-attempts', attempts: 6 })
    t.same(delays, [100, 200, 400, 800, 1000, 1000].map((bound) => Math.floor(r * bound)), `random ${r}`)
  }
})

t.test('the attempt count resets after a connection stayed open stableAfter ms, not before', async (t) => {
  const server = await startEnvelopeServer()
  const clock = new FakeClock()
  const attempts: number[] = []
  const client = connect(`ws://127.0.0.1:${server.port}/env`, {
    WebSocket: NodeWebSocket, clock, random: () => 0, reconnect: { base: 100, stableAfter: 1000 }, liveness: false
  })
  t.teardown(async () => { client.close(); await server.close() })
  client.on('reconnecting', (attempt, delay) => { attempts.push(attempt); queueMicrotask(() => clock.advance(delay)) })
  await next(client, 'open')
  const drop = async (openFor: number): Promise<void> => {
    clock.advance(openFor)
    const reopened = next(client, 'open')
    server.sockets.at(-1)!.terminate()
    await reopened
  }
  await drop(999)
  await drop(999)
  await drop(1000)
  await drop(10)
  t.same(attempts, [1, 2, 1, 2])
})

t.test('close codes that must not be retried stop the client and say why; others reconnect', async (t) => {
  for (const code of [1002, 1003, 1007, 1008, 1009, 1010, 4000, 4999]) {
    const server = await startEnvelopeServer()
    const client = connect(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket, reconnect: { base: 1 } })
    t.teardown(async () => { client.close(); await server.close() })
    await next(client, 'open')
    const stopped = next<StopReason>(client, 'stopped')
    client.send({ close: [code, 'no'] })
    t.same(await stopped, { reason: 'close-code', code, message: 'no' }, `${code} stops`)
    t.equal(client.state, 'stopped')
  }
  for (const code of [1000, 1001, 1011, 1012, 1013, 3000]) {
    const server = await startEnvelopeServer()
    const client = connect(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket, reconnect: { base: 1 } })
    t.teardown(async () => { client.close(); await server.close() })
    await next(client, 'open')
    const reopened = next(client, 'open')
    client.send({ close: [code, ''] })
    await reopened
    t.pass(`${code} reconnects`)
  }
})

t.test('retry() overrides the rule: a 4000-4999 code the app says is transient reconnects', async (t) => {
  const server = await startEnvelopeServer()
  const seen: Array<[number, string]> = []
  const client = connect(`ws://127.0.0.1:${server.port}/env`, {
    WebSocket: NodeWebSocket, reconnect: { base: 1 }, retry: (code, reason) => { seen.push([code, reason]); return code === 4503 ? true : undefined }
  })
  t.teardown(async () => { client.close(); await server.close() })
  await next(client, 'open')
  const reopened = next(client, 'open')
  client.send({ close: [4503, 'busy'] })
  await reopened
  const stopped = next<StopReason>(client, 'stopped')
  client.send({ close: [4001, 'kicked'] })
  t.same(await stopped, { reason: 'close-code', code: 4001, message: 'kicked' })
  t.same(seen, [[4503, 'busy'], [4001, 'kicked']])
})

t.test('Node transport: a handshake refused with a 4xx stops (the status says why), unless retry() says otherwise; a 5xx is retried', async (t) => {
  const { app } = await buildApp({}, {}, 'warn')
  let failures = 2
  let busyLeft = 2
  app.addHook('onRequest', async (request, reply) => {
    if (request.url === '/flaky' && failures-- > 0) return reply.code(503).send({ error: 'later' })
    if (request.url === '/busy' && busyLeft-- > 0) return reply.code(429).send({ error: 'slow down' })
  })
  app.get('/flaky', { websocket: { selectProtocol: () => 'fastify-rfc6455.v1' } }, () => {})
  app.get('/busy', { websocket: { selectProtocol: () => 'fastify-rfc6455.v1' } }, () => {})
  app.get('/forbidden', { websocket: { selectProtocol: () => 'fastify-rfc6455.v1' } }, () => {})
  app.addHook('preValidation', async (request, reply) => {
    if (request.url === '/forbidden') return reply.code(403).send({ error: 'no' })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const port = (app.server.address() as { port: number }).port

  const refused = connect(`ws://127.0.0.1:${port}/forbidden`, { WebSocket: NodeWebSocket, reconnect: { base: 1 } })
  t.teardown(() => refused.close())
  t.same(await next<StopReason>(refused, 'stopped'), { reason: 'handshake-refused', status: 403 })
  const missing = connect(`ws://127.0.0.1:${port}/nothing-here`, { WebSocket: NodeWebSocket, reconnect: { base: 1 } })
  t.teardown(() => missing.close())
  t.same(await next<StopReason>(missing, 'stopped'), { reason: 'handshake-refused', status: 404 })

  // retry() may take a 4xx as transient (429 Too Many Requests).
  const busySeen: Array<number | undefined> = []
  const busy = connect(`ws://127.0.0.1:${port}/busy`, {
    WebSocket: NodeWebSocket, reconnect: { base: 1 }, retry: (_code, _reason, status) => { busySeen.push(status); return status === 429 || undefined }
  })
  t.teardown(() => busy.close())
  await next(busy, 'open')
  t.same(busySeen, [429, 429], 'two 429s retried, then open')

  const attempts: number[] = []
  const flaky = connect(`ws://127.0.0.1:${port}/flaky`, { WebSocket: NodeWebSocket, reconnect: { base: 1 } })
  t.teardown(() => flaky.close())
  flaky.on('reconnecting', (attempt) => { attempts.push(attempt) })
  await next(flaky, 'open')
  t.same(attempts, [1, 2], 'two 503s, then open')
})

t.test('a server that does not select the subprotocol: the client stops (it would not understand it)', async (t) => {
  const server = await startEnvelopeServer({ noProtocol: true })
  const client = connect(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket })
  t.teardown(async () => { client.close(); await server.close() })
  t.same(await next<StopReason>(client, 'stopped'), { reason: 'subprotocol', protocol: '' })
})

t.test('reconnect: false never reconnects; close() while waiting stops the timer', async (t) => {
  const server = await startEnvelopeServer()
  const client = connect(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket, reconnect: false })
  t.teardown(async () => { client.close(); await server.close() })
  await next(client, 'open')
  const stopped = next<StopReason>(client, 'stopped')
  server.sockets[0]!.terminate()
  t.same(await stopped, { reason: 'max-attempts', attempts: 0 })

  const port = await deadPort()
  const clock = new FakeClock()
  const waiting = connect(`ws://127.0.0.1:${port}/`, { WebSocket: NodeWebSocket, clock, random: () => 0.5 })
  await within(new Promise<void>((resolve) => { waiting.on('reconnecting', () => resolve()) }), 3000, 'reconnecting')
  t.equal(clock.pending.length, 1, 'one timer: the next attempt')
  waiting.close()
  t.same(clock.pending, [], 'close() cleared it')
  t.equal(waiting.state, 'stopped')
})

t.test('frames of the wire format the client does not know are ignored (a {"P"} answer, unknown keys)', async (t) => {
  const server = await startEnvelopeServer()
  const client = connect(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket })
  t.teardown(async () => { client.close(); await server.close() })
  await next(client, 'open')
  const got: unknown[] = []
  const errors: unknown[] = []
  client.on('message', (m) => { got.push(m) }).on('error', (e) => { errors.push(e) })
  server.push({ P: 1 })
  server.push({ future: true } as Frame)
  server.push({ r: 99, m: 'unknown id' })
  server.push({ m: null })
  await waitFor(() => got.length === 1, 2000, 'the message')
  t.same(got, [null])
  t.same(errors, [])
})

t.test('a retry() that throws is reported on error and the default rule applies', async (t) => {
  const server = await startEnvelopeServer()
  const errors: unknown[] = []
  const client = connect(`ws://127.0.0.1:${server.port}/env`, {
    WebSocket: NodeWebSocket, reconnect: { base: 1 }, retry: () => { throw new Error('retry bug') }
  })
  t.teardown(async () => { client.close(); await server.close() })
  client.on('error', (err) => { errors.push(err) })
  await next(client, 'open')
  const reopened = next(client, 'open')
  server.sockets[0]!.terminate()
  await reopened
  t.match(errors, [{ message: 'retry bug' }])
})
