// The client against a hand-written server of its wire format: messages both ways, requests both ways with
// their timeouts and failures, a peer that never answers, a connection that drops with a request in flight.
import t from 'tap'
import {
  connect, RequestTimeoutError, RequestFailedError, ConnectionClosedError, ClientClosedError, type Client, type ClientContract
} from '../../lib/client/index.js'
import { NodeWebSocket } from '../../lib/client/node-transport.js'
import { within, waitFor, delay } from '../helpers/index.js'
import { startEnvelopeServer, type EnvelopeServer, type Frame } from './envelope-server.js'

interface Chat extends ClientContract {
  send: Frame
  receive: Frame
}

function opened (client: Client<Chat>): Promise<void> {
  return within(new Promise<void>((resolve) => { client.on('open', resolve) }), 3000, "the client's 'open'")
}

async function setup (t: { teardown (fn: () => unknown): void }): Promise<{ server: EnvelopeServer, client: Client<Chat> }> {
  const server = await startEnvelopeServer()
  const client = connect<Chat>(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket, reconnect: false })
  t.teardown(async () => { client.close(); await server.close() })
  await opened(client)
  return { server, client }
}

t.test('messages both ways, in order, as {"m"} frames', async (t) => {
  const { server, client } = await setup(t)
  const got: unknown[] = []
  client.on('message', (m, topic) => { got.push([m, topic]) })
  client.send({ n: 1 })
  client.send({ reply: { hello: 'client' } })
  await waitFor(() => got.length === 1, 2000, 'the reply message')
  t.same(server.frames, [{ m: { n: 1 } }, { m: { reply: { hello: 'client' } } }])
  t.same(got, [[{ hello: 'client' }, undefined]])
  t.equal(client.state, 'open')
})

t.test('request(): the reply; an "e" reply is a RequestFailedError with its code', async (t) => {
  const { server, client } = await setup(t)
  t.same(await client.request({ a: 1 }), { echo: { a: 1 } })
  const err = await client.request({ fail: 'invalid' }).catch((e: unknown) => e)
  t.ok(err instanceof RequestFailedError)
  t.equal((err as RequestFailedError).code, 'FST_WS_REQUEST_FAILED')
  t.equal((err as RequestFailedError).reason, 'invalid')
  t.same(server.frames, [{ q: 1, m: { a: 1 } }, { q: 2, m: { fail: 'invalid' } }], 'ids are positive, per sender, increasing')
})

t.test('request() to a server that never answers: RequestTimeoutError after its timeout; a late reply is ignored', async (t) => {
  const { server, client } = await setup(t)
  const started = Date.now()
  const err = await client.request({ never: true }, { timeout: 150 }).catch((e: unknown) => e)
  t.ok(err instanceof RequestTimeoutError)
  t.equal((err as RequestTimeoutError).code, 'FST_WS_REQUEST_TIMEOUT')
  t.equal((err as RequestTimeoutError).name, 'RequestTimeoutError')
  t.ok(Date.now() - started >= 140, 'not before the timeout')
  server.push({ r: 1, m: 'too late' })
  t.same(await client.request({ v: 'next' }), { echo: { v: 'next' } }, 'the client is still usable')
})

t.test('the connection drops with a request in flight: ConnectionClosedError (outcome unknown)', async (t) => {
  const { server, client } = await setup(t)
  const pending = client.request({ never: true }, { timeout: 5000 })
  await waitFor(() => server.frames.length === 1, 2000, 'the request at the server')
  server.sockets[0]!.terminate()
  const err = await within(pending.catch((e: unknown) => e), 2000, 'the rejection')
  t.ok(err instanceof ConnectionClosedError)
  t.equal((err as ConnectionClosedError).code, 'FST_WS_REQUEST_CLOSED', 'the code the server side uses for the same case')
})

t.test("the server's requests: the handler's value or promise is the reply, a throw is 'failed'", async (t) => {
  const { server, client } = await setup(t)
  t.same(await server.request({ x: 1 }), { r: 1, e: 'no-handler' }, 'no handler yet')
  const errors: unknown[] = []
  client.on('error', (err) => { errors.push(err) })
  client.onRequest(async (m) => {
    if (m.boom === true) throw new Error('handler failed')
    if (m.sync === true) return { sync: true }
    await delay(10)
    return { got: m }
  })
  t.same(await within(server.request({ x: 2 }), 2000, 'reply'), { r: 2, m: { got: { x: 2 } } })
  t.same(await within(server.request({ boom: true }), 2000, 'reply'), { r: 3, e: 'failed' })
  t.same(await within(server.request({ sync: true }), 2000, 'reply'), { r: 4, m: { sync: true } })
  t.equal(errors.length, 1, "the handler's error is reported")
  t.match((errors[0] as Error).message, 'handler failed')
})

t.test('a handler whose reply comes after the connection dropped does not send it on the next one', async (t) => {
  const server = await startEnvelopeServer()
  const client = connect<Chat>(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket, reconnect: { base: 1, cap: 1 } })
  t.teardown(async () => { client.close(); await server.close() })
  let release = (): void => {}
  client.onRequest(() => new Promise((resolve) => { release = () => resolve({ late: true }) }))
  await opened(client)
  void server.request({ slow: true })
  await waitFor(() => server.sockets.length === 1 && server.frames.length === 0, 1000, 'request sent')
  await delay(20)
  const reopened = opened(client)
  server.sockets[0]!.terminate()
  await reopened
  release()
  await delay(50)
  t.same(server.frames.filter((f) => 'r' in f), [], 'no reply on the new connection')
})

t.test('after close(): send throws ClientClosedError, request rejects with it, waiting requests fail', async (t) => {
  const { server, client } = await setup(t)
  const inFlight = client.request({ never: true }, { timeout: 5000 })
  await waitFor(() => server.frames.length === 1, 2000, 'the request at the server')
  const stopped: unknown[] = []
  client.on('stopped', (why) => { stopped.push(why) })
  const closed = within(new Promise<[number, string]>((resolve) => { client.on('close', (code, reason) => resolve([code, reason])) }), 2000, 'close')
  client.close(4100, 'bye')
  t.ok((await inFlight.catch((e: unknown) => e)) instanceof ConnectionClosedError)
  t.throws(() => client.send({}), { code: 'FST_WS_CLIENT_CLOSED' })
  t.ok((await client.request({}).catch((e: unknown) => e)) instanceof ClientClosedError)
  t.same(stopped, [{ reason: 'closed' }])
  t.same(await closed, [4100, ''], 'the server echoed our close code')
  t.equal(client.state, 'stopped')
  client.close() // twice is fine
})

t.test('frames that are not the envelope are reported as errors, not thrown', async (t) => {
  const { server, client } = await setup(t)
  const errors: unknown[] = []
  client.on('error', (err) => { errors.push(err) })
  server.sockets[0]!.send('not json')
  server.sockets[0]!.send('42')
  server.push({ m: 'after' })
  const got: unknown[] = []
  client.on('message', (m) => { got.push(m) })
  await waitFor(() => got.length === 1, 2000, 'the message after')
  t.equal(errors.length, 2)
  t.same(got, ['after'])
})

t.test('a listener that throws is reported on the error event and the others still run', async (t) => {
  const { server, client } = await setup(t)
  const errors: unknown[] = []
  const got: unknown[] = []
  client.on('error', (err) => { errors.push(err) })
  client.on('message', () => { throw new Error('listener bug') })
  client.on('message', (m) => { got.push(m) })
  server.push({ m: 1 })
  await waitFor(() => got.length === 1, 2000, 'the second listener')
  t.match((errors[0] as Error).message, 'listener bug')
  const off = (): void => { got.push('removed') }
  client.on('message', off).off('message', off)
  server.push({ m: 2 })
  await waitFor(() => got.length === 2, 2000, 'the second message')
  t.same(got, [1, 2])
})

t.test("the transport: Node's global WebSocket when there is one, else the plugin's engine, loaded on demand; 'node' forces it", async (t) => {
  const server = await startEnvelopeServer()
  t.teardown(() => server.close())
  for (const options of [{}, { WebSocket: 'node' as const }]) {
    const client = connect<Chat>(`ws://127.0.0.1:${server.port}/env`, { ...options, reconnect: false })
    t.teardown(() => client.close())
    await opened(client)
    t.same(await client.request({ via: JSON.stringify(options) }), { echo: { via: JSON.stringify(options) } })
    client.close()
  }
  t.comment(`global WebSocket: ${typeof (globalThis as { WebSocket?: unknown }).WebSocket}`)
})

t.test('a reply that cannot be serialized (a cycle) answers "failed" and is reported, not an unhandled rejection', async (t) => {
  const { server, client } = await setup(t)
  const errors: unknown[] = []
  client.on('error', (err) => { errors.push(err) })
  client.onRequest(() => {
    const cycle: Frame = {}
    cycle.self = cycle
    return cycle
  })
  t.same(await within(server.request({ x: 1 }), 2000, 'the reply'), { r: 1, e: 'failed' })
  t.equal(errors.length, 1)
  t.ok(errors[0] instanceof TypeError, 'the serialization error')
})

t.test('close() with a code a browser refuses (not 1000 or 3000-4999) throws a typed error and stops nothing', async (t) => {
  const { client } = await setup(t)
  for (const code of [1001, 1006, 2999, 5000, 1000.5]) {
    t.throws(() => client.close(code), { code: 'FST_WS_CLIENT_OPTION' }, String(code))
  }
  t.equal(client.state, 'open')
  t.same(await client.request({ still: 'open' }), { echo: { still: 'open' } })
})

t.test('close() with a reason over 123 UTF-8 bytes throws a typed error and stops nothing', async (t) => {
  const { client } = await setup(t)
  t.throws(() => client.close(1000, 'é'.repeat(62)), { code: 'FST_WS_CLIENT_OPTION' }, '124 bytes')
  t.equal(client.state, 'open')
  client.close(1000, 'é'.repeat(61) + 'x')
  t.equal(client.state, 'stopped', '123 bytes is fine')
})
