// Resuming a topic with subscribe(topic, { since }) on another instance than the one a client left: inside the
// history, at its edge, beyond it, ahead of the topic, across an epoch change, and while messages keep coming.
import t, { type Test } from 'tap'
import { startRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/index.js'
import { startInstance, Client } from './redis-helpers.js'

async function setup (t: Test, history = { size: 10, ttl: 60_000 }) {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url, { history })
  const b = await startInstance(redis.url, { history })
  t.teardown(async () => { await a.close(); await b.close() })
  const publish = async (from: number, to: number): Promise<void> => {
    for (let n = from; n <= to; n++) await a.app.websocketServer.publish('room', JSON.stringify(n))
  }
  return { redis, a, b, publish }
}

t.test('inside the history: the missed messages, then live, on the other instance', async (t) => {
  const { a, b, publish } = await setup(t)
  const first = await Client.connect(a.port, 'room')
  await publish(1, 5)
  await waitFor(() => first.received.length === 5, 2000, 'five')
  const position = first.position()
  first.close()
  await publish(6, 9)
  const again = await Client.connect(b.port, 'room', position)
  t.teardown(() => again.close())
  t.match(again.subscribed, { status: 'recovered', epoch: position.epoch, offset: 9, replayed: 4 })
  await publish(10, 11)
  await waitFor(() => again.received.length === 6, 2000, 'replayed and live')
  t.same(again.received.map((e) => e.data), [6, 7, 8, 9, 10, 11], 'no gap, no duplicate at the switch')
  t.same(again.gaps, [])
})

t.test('at the edge of the history (size 10): exactly 10 missed is recovered, 11 is a gap', async (t) => {
  const { b, publish } = await setup(t)
  await publish(1, 20)
  const edge = await Client.connect(b.port, 'room', { epoch: await epochOf(b), offset: 10 })
  t.teardown(() => edge.close())
  t.match(edge.subscribed, { status: 'recovered', replayed: 10, offset: 20 })
  t.same(edge.received.map((e) => e.data), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20])
  const beyond = await Client.connect(b.port, 'room', { epoch: await epochOf(b), offset: 9 })
  t.teardown(() => beyond.close())
  t.match(beyond.subscribed, { status: 'gap', reason: 'history-expired', offset: 20 })
  t.same(beyond.received, [], 'no partial history')
  const current = await Client.connect(b.port, 'room', { epoch: await epochOf(b), offset: 20 })
  t.teardown(() => current.close())
  t.match(current.subscribed, { status: 'recovered', replayed: 0, offset: 20 }, 'nothing missed')
  const ahead = await Client.connect(b.port, 'room', { epoch: await epochOf(b), offset: 21 })
  t.teardown(() => ahead.close())
  t.match(ahead.subscribed, { status: 'gap', reason: 'unknown-position' })
  await publish(21, 21)
  await waitFor(() => [edge, beyond, current, ahead].every((c) => c.received.some((e) => e.data === 21)), 2000, 'live for all four')
})

t.test('the history\'s age limit: messages older than history.ttl are not replayed', async (t) => {
  const { b, publish } = await setup(t, { size: 100, ttl: 1000 })
  await publish(1, 3)
  const epoch = await epochOf(b)
  await new Promise((resolve) => setTimeout(resolve, 1300))
  await publish(4, 4) // trimming happens on publish
  const late = await Client.connect(b.port, 'room', { epoch, offset: 1 })
  t.teardown(() => late.close())
  t.match(late.subscribed, { status: 'gap', reason: 'history-expired' })
})

t.test('across an epoch change: the topic\'s state was lost in Redis', async (t) => {
  const { a, b, publish } = await setup(t)
  await publish(1, 3)
  const old = await epochOf(b)
  await a.redis.del('ws:{room}:m', 'ws:{room}:h')
  await publish(1, 2)
  const fresh = await epochOf(b)
  t.not(fresh, old, 'a new epoch')
  const c = await Client.connect(b.port, 'room', { epoch: old, offset: 3 })
  t.teardown(() => c.close())
  t.match(c.subscribed, { status: 'gap', reason: 'epoch-changed', epoch: fresh, offset: 2 })
  t.same(c.received, [], 'nothing from the old positions is replayed as if it were new')
})

t.test('resuming while messages keep coming: contiguous, no duplicate', async (t) => {
  const { a, b } = await setup(t, { size: 1000, ttl: 60_000 })
  const first = await Client.connect(a.port, 'room')
  let n = 0
  let stop = false
  const pump = (async () => {
    while (!stop && n < 3000) {
      await a.app.websocketServer.publish('room', JSON.stringify(++n))
      if (n % 10 === 0) await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  await waitFor(() => first.received.length >= 50, 5000, 'some messages')
  const position = first.position()
  first.close()
  const resumers: Client[] = []
  for (let i = 0; i < 5; i++) resumers.push(await Client.connect(b.port, 'room', position))
  t.teardown(() => { for (const c of resumers) c.close() })
  await new Promise((resolve) => setTimeout(resolve, 100))
  stop = true
  await pump
  await waitFor(() => resumers.every((c) => c.received.length > 0 && c.received[c.received.length - 1]!.data === n), 5000, 'the last message')
  for (const c of resumers) {
    const got = c.received.map((e) => e.data as number)
    t.same(got, Array.from({ length: n - position.offset }, (_, i) => position.offset + 1 + i), `resumer: ${position.offset + 1}..${n} exactly`)
  }
})

async function epochOf (inst: { redis: { hget: (k: string, f: string) => Promise<string | null> } }): Promise<string> {
  return (await inst.redis.hget('ws:{room}:m', 'e')) ?? ''
}
