// The outbox while disconnected: bounded, the three policies when full, drops reported, requests waiting in it
// with their timeout running, sent in order once connected.
import t from 'tap'
import { createServer } from 'node:net'
import { connect, OutboxFullError, RequestTimeoutError, ClientError, type Client } from '../../lib/client/index.js'
import { NodeWebSocket } from '../../lib/client/node-transport.js'
import { within, waitFor } from '../helpers/index.js'
import { startEnvelopeServer, type EnvelopeServer } from './envelope-server.js'

function opened (client: Client): Promise<void> {
  return within(new Promise<void>((resolve) => { client.on('open', resolve) }), 3000, "the client's 'open'")
}

/** A port reserved now, served later by startEnvelopeServer({ port }). */
async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise((resolve) => s.close(resolve))
  return port
}

async function offline (t: { teardown (fn: () => unknown): void }, policy?: 'drop-oldest' | 'drop-newest' | 'throw'): Promise<{ client: Client, start (): Promise<EnvelopeServer> }> {
  const port = await freePort()
  let server: EnvelopeServer | null = null
  const client = connect(`ws://127.0.0.1:${port}/env`, {
    WebSocket: NodeWebSocket, reconnect: { base: 5, cap: 20 }, outbox: { size: 3, policy }
  })
  t.teardown(async () => { client.close(); await server?.close() })
  return { client, start: async () => (server = await startEnvelopeServer({ port })) }
}

t.test("default 'drop-oldest': the newest 3 are kept and sent in order; the dropped ones are reported", async (t) => {
  const { client, start } = await offline(t)
  const dropped: unknown[] = []
  client.on('drop', (m) => { dropped.push(m) })
  for (let i = 1; i <= 5; i++) client.send({ i })
  t.same(dropped, [{ i: 1 }, { i: 2 }])
  const server = await start()
  await opened(client)
  await waitFor(() => server.frames.length === 3, 2000, 'the outbox')
  t.same(server.frames, [{ m: { i: 3 } }, { m: { i: 4 } }, { m: { i: 5 } }])
})

t.test("'drop-newest': the first 3 are kept; a request dropped rejects with OutboxFullError", async (t) => {
  const { client, start } = await offline(t, 'drop-newest')
  const dropped: unknown[] = []
  client.on('drop', (m) => { dropped.push(m) })
  client.send({ i: 1 })
  const kept = client.request({ i: 2 })
  client.send({ i: 3 })
  const refused = client.request({ i: 4 }).catch((e: unknown) => e)
  client.send({ i: 5 })
  t.same(dropped, [{ i: 4 }, { i: 5 }])
  const err = await refused
  t.ok(err instanceof OutboxFullError)
  t.equal((err as OutboxFullError).code, 'FST_WS_OUTBOX_FULL')
  const server = await start()
  t.same(await within(kept, 3000, 'the reply'), { echo: { i: 2 } }, 'a request waiting in the outbox is sent on connect')
  t.same(server.frames, [{ m: { i: 1 } }, { q: 1, m: { i: 2 } }, { m: { i: 3 } }])
})

t.test("'drop-oldest' drops a waiting request: it rejects with OutboxFullError", async (t) => {
  const { client } = await offline(t)
  const first = client.request({ i: 1 }).catch((e: unknown) => e)
  client.send({ i: 2 })
  client.send({ i: 3 })
  client.send({ i: 4 })
  t.ok((await first) instanceof OutboxFullError)
})

t.test("'throw': send() throws OutboxFullError, request() rejects with it; nothing is dropped", async (t) => {
  const { client, start } = await offline(t, 'throw')
  const dropped: unknown[] = []
  client.on('drop', (m) => { dropped.push(m) })
  for (let i = 1; i <= 3; i++) client.send({ i })
  t.throws(() => client.send({ i: 4 }), { code: 'FST_WS_OUTBOX_FULL' })
  t.ok((await client.request({ i: 5 }).catch((e: unknown) => e)) instanceof OutboxFullError)
  t.same(dropped, [])
  const server = await start()
  await opened(client)
  await waitFor(() => server.frames.length === 3, 2000, 'the outbox')
  t.same(server.frames.map((f) => f.m), [{ i: 1 }, { i: 2 }, { i: 3 }])
})

t.test('a request waiting in the outbox times out and is not sent later', async (t) => {
  const { client, start } = await offline(t)
  const err = await client.request({ i: 1 }, { timeout: 50 }).catch((e: unknown) => e)
  t.ok(err instanceof RequestTimeoutError)
  client.send({ i: 2 })
  const server = await start()
  await opened(client)
  await waitFor(() => server.frames.length === 1, 2000, 'the message')
  t.same(server.frames, [{ m: { i: 2 } }], 'the timed-out request left the outbox')
})

t.test('options are checked: a typed error for a bad number or policy', async (t) => {
  const bad = [
    { outbox: { size: -1 } }, { reconnect: { base: Number.NaN } }, { liveness: { idle: -5 } },
    { outbox: { policy: 'keep-all' as 'throw' } }, { requestTimeout: '10' as unknown as number }
  ]
  for (const options of bad) {
    t.throws(() => connect('ws://127.0.0.1:1/', options), { code: 'FST_WS_CLIENT_OPTION' }, JSON.stringify(options))
  }
  const err = await (async () => {
    const client = connect('ws://127.0.0.1:1/', { WebSocket: NodeWebSocket, reconnect: false })
    t.teardown(() => client.close())
    return client.request({}, { timeout: -1 }).catch((e: unknown) => e)
  })()
  t.ok(err instanceof ClientError)
  t.equal((err as ClientError).code, 'FST_WS_CLIENT_OPTION')
  t.throws(() => connect('not a url'), TypeError)
})
