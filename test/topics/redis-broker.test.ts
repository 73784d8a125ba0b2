// The Redis broker's edges: option checks, publish's two failures (not sent / outcome unknown), subscribing while
// Redis is away, 'history' replay, foreign messages on its channels, close().
import t from 'tap'
import { Redis } from 'ioredis'
import { RedisTopics } from '../../lib/index.js'
import { startRedis } from '../helpers/redis.js'
import { waitFor, guardUnhandled } from '../helpers/index.js'
import { startInstance, Client } from './redis-helpers.js'

t.test('options are checked once, in the constructor: FST_WS_INVALID_BROKER_OPTION', async (t) => {
  const client = new Redis({ lazyConnect: true })
  const bad: unknown[] = [
    null, {}, { client: {} }, { client, prefix: 'a{b' }, { client, envelope: 'xml' }, { client, publishTimeout: 0 },
    { client, presenceTtl: 1.5 }, { client, history: { size: -1 } }, { client, epochTtl: 10, history: { ttl: 20 } }, { client, color: 'red' }
  ]
  for (const options of bad) {
    t.throws(() => new RedisTopics(options as never), { code: 'FST_WS_INVALID_BROKER_OPTION' }, JSON.stringify(options, (k, v) => k === 'client' ? 'client' : v))
  }
  client.disconnect()
})

t.test('publish: waits for a client that is connecting, rejects unsent when it never is, times out when Redis stalls', async (t) => {
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const inst = await startInstance(redis.url, { publishTimeout: 300 })
  t.teardown(() => inst.close())
  const server = inst.app.websocketServer

  // Stalled: Redis takes the command but answers after the deadline. The outcome is unknown, and said so.
  await inst.redis.call('CLIENT', 'PAUSE', '600', 'WRITE')
  await t.rejects(server.publish('p', 'stalled'), { code: 'FST_WS_BROKER_TIMEOUT' })
  await new Promise((resolve) => setTimeout(resolve, 500))
  const after = await server.publish('p', 'next')
  t.equal(after.offset, 2, 'the stalled publish did happen in the end (outcome unknown was the honest answer)')

  // Away: nothing is sent while the client is not ready; past the deadline the caller learns it was not published.
  await redis.kill('SIGKILL')
  await waitFor(() => inst.redis.status !== 'ready', 2000, 'the client notices')
  await t.rejects(server.publish('p', 'lost'), { code: 'FST_WS_BROKER_UNAVAILABLE', message: /not published/ })
  await redis.restart()
  await waitFor(() => inst.redis.status === 'ready', 5000, 'back')
  t.match(await server.publish('p', 'after'), { offset: 1 }, 'the unsent one is not in the (restarted) topic')

  // Back within the deadline: a publish made meanwhile waits for the client, then goes through.
  const patient = await startInstance(redis.url, { publishTimeout: 10_000 })
  t.teardown(() => patient.close())
  await redis.kill('SIGKILL')
  await waitFor(() => patient.redis.status !== 'ready', 2000, 'the client notices')
  const waiting = patient.app.websocketServer.publish('q', 'waited')
  await new Promise((resolve) => setTimeout(resolve, 200))
  await redis.restart()
  t.match(await waiting, { topic: 'q', offset: 1 }, 'sent once Redis was back')
  t.same(guard.errors, [])
})

t.test('subscribing while Redis is away resolves once it is back; history replay on Redis', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url)
  t.teardown(() => a.close())
  for (let i = 1; i <= 3; i++) await a.app.websocketServer.publish('h', JSON.stringify(i))
  const newcomer = await Client.connect(a.port, 'h', undefined)
  t.match(newcomer.subscribed, { status: 'live', offset: 3 })
  await redis.kill('SIGKILL')
  await waitFor(() => a.redis.status !== 'ready', 2000, 'down')
  const pending = Client.connect(a.port, 'other')
  await new Promise((resolve) => setTimeout(resolve, 300))
  await redis.restart()
  const late = await pending
  t.match(late.subscribed, { status: 'live', topic: 'other' }, 'resolved once Redis was back')
  await a.app.websocketServer.publish('other', '"hello"')
  await waitFor(() => late.received.length === 1, 3000, 'live after the outage')
  for (const c of [newcomer, late]) c.close()
})

t.test("since 'history' replays the stored messages, then live, with no duplicate", async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url, { history: { size: 5, ttl: 60_000 } })
  t.teardown(() => a.close())
  const before = await Client.connect(a.port, 'room')
  for (let i = 1; i <= 8; i++) await a.app.websocketServer.publish('room', JSON.stringify(i))
  let n = 8
  let stop = false
  const pump = (async () => { while (!stop) await a.app.websocketServer.publish('room', JSON.stringify(++n)) })()
  await waitFor(() => before.received.length >= 20, 5000, 'traffic')
  const c = await Client.connect(a.port, 'room', 'history')
  t.match(c.subscribed, { status: 'recovered' })
  stop = true
  await pump
  await waitFor(() => c.received.at(-1)?.data === n, 5000, 'the last one')
  const got = c.received.map((e) => e.data as number)
  t.ok(got.length >= 5, `at least the 5 kept (got ${got.length})`)
  t.same(got, Array.from({ length: got.length }, (_, i) => got[0]! + i), 'contiguous from the oldest kept to the last, no duplicate')
  for (const x of [before, c]) x.close()
})

t.test('foreign messages on a channel are ignored; close() cancels what is pending and releases the counts', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url)
  const c = await Client.connect(a.port, 'x')
  await a.redis.publish('ws:{x}', 'not one of ours')
  await a.redis.publish('ws:{x}', 'e\nnot-a-number\n0\n\npayload')
  await a.app.websocketServer.publish('x', '"ours"')
  await waitFor(() => c.received.length === 1, 2000, 'ours only')
  t.same(c.received.map((e) => e.data), ['ours'])
  t.equal((await a.app.websocketServer.subscriberCounts('x')).total, 1)
  c.close()
  await a.close()
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  t.equal(await probe.exists('ws:{x}:p'), 0, 'no count left behind')
  t.same(await probe.call('PUBSUB', 'CHANNELS', '*'), [], 'no subscription left behind')
})

t.test('publishes waiting for a stalled Redis are bounded: past 10,000 publish() refuses at once, unsent', async (t) => {
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const inst = await startInstance(redis.url)
  t.teardown(() => inst.close())
  await inst.app.websocketServer.publish('s', 'warm-up') // the client is ready and the script loaded
  await inst.redis.call('CLIENT', 'PAUSE', '1500', 'WRITE')
  const results = await Promise.allSettled(Array.from({ length: 12_000 }, (_, i) => inst.app.websocketServer.publish('s', String(i))))
  const accepted = results.filter((r) => r.status === 'fulfilled').length
  const refused = results.filter((r) => r.status === 'rejected' && /already wait/.test(String((r.reason as Error).message))).length
  t.equal(accepted, 10_000, 'the first 10,000 wait and go through once Redis resumes')
  t.equal(refused, 2000, 'the rest are refused at once with FST_WS_BROKER_UNAVAILABLE')
  const after = await inst.app.websocketServer.publish('s', 'after')
  t.equal(after.offset, 10_002, 'the refused ones were never published (1 warm-up + 10,000 + this one)')
  t.same(guard.errors, [])
})
