// When the Redis broker cannot fill a gap, it says so: a live gap beyond the history is a 'topicGap' event; a
// resume while Redis is unreachable is a 'broker-unavailable' gap. And what waits on Redis when the socket or the
// app goes away is settled, not left hanging.
import t from 'tap'
import { startRedis } from '../helpers/redis.js'
import { waitFor, guardUnhandled } from '../helpers/index.js'
import { startInstance, Client } from './redis-helpers.js'

t.test('missed more than the history holds while the subscriber reconnected: topicGap history-expired, then live', async (t) => {
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url)
  const b = await startInstance(redis.url, { history: { size: 5, ttl: 60_000 } })
  t.teardown(async () => { await a.close(); await b.close() })
  const c = await Client.connect(a.port, 'room')
  for (let i = 1; i <= 3; i++) await b.app.websocketServer.publish('room', JSON.stringify(i))
  await waitFor(() => c.received.length === 3, 2000, 'three')
  // a's subscriber connection goes; ioredis reconnects after 100 ms (the helper's retryStrategy), and 50 messages
  // are published meanwhile: the history keeps 5.
  await a.redis.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  for (let i = 4; i <= 53; i++) await b.app.websocketServer.publish('room', JSON.stringify(i))
  await waitFor(() => c.gaps.length > 0, 5000, 'the gap signal')
  t.match(c.gaps[0], { topic: 'room', reason: 'history-expired', offset: 53 })
  await b.app.websocketServer.publish('room', JSON.stringify(54))
  await waitFor(() => c.received.at(-1)?.data === 54, 3000, 'live again')
  t.same(c.received.map((e) => e.data), [1, 2, 3, 54], 'no partial history: what it had, then live after the signalled gap')
  t.same(guard.errors, [])
})

t.test('resuming while Redis is unreachable: a broker-unavailable gap, not a hang', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url)
  t.teardown(() => a.close())
  const first = await Client.connect(a.port, 'room') // the topic is live on a
  await a.app.websocketServer.publish('room', '1')
  await waitFor(() => first.received.length === 1, 2000, 'one')
  const position = first.position()
  await redis.kill('SIGKILL')
  const late = await Client.connect(a.port, 'room', position)
  t.match(late.subscribed, { status: 'gap', reason: 'broker-unavailable' })
  t.ok(a.logs.find('reading the history failed').length > 0, 'logged')
  for (const c of [first, late]) c.close()
})

t.test('a socket that leaves while its subscription waits for Redis; the app closing with publishes and subscriptions pending', async (t) => {
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url, { publishTimeout: 30_000 })
  await redis.kill('SIGKILL')
  await waitFor(() => a.redis.status !== 'ready', 2000, 'down')
  const pending = Client.connect(a.port, 'waiting').catch((err: Error) => err)
  await waitFor(() => a.app.websocketServer.subscriberCount('waiting') === 1, 2000, 'the subscription waits')
  // The client gives up: the socket closes while its subscribe() waits.
  for (const s of a.app.websocketServer.clients) s.terminate()
  await waitFor(() => a.app.websocketServer.subscriberCount('waiting') === 0, 2000, 'released')
  t.ok((await pending) instanceof Error, 'the client saw its connection end')

  const publishing = a.app.websocketServer.publish('waiting', 'never').catch((err: { code: string }) => err.code)
  const stuck = Client.connect(a.port, 'stuck').catch((err: Error) => err)
  await waitFor(() => a.app.websocketServer.subscriberCount('stuck') === 1, 2000, 'a second subscription waits')
  await a.close()
  t.equal(await publishing, 'FST_WS_BROKER_UNAVAILABLE', 'a publish waiting for Redis is rejected when the app closes')
  t.ok((await stuck) instanceof Error, 'the waiting socket was closed with the app')
  await redis.restart()
  t.same(guard.errors, [], 'nothing left to crash later')
})
