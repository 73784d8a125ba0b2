// Cluster-wide topics: three Fastify instances on one real redis-server, `ws` clients on each. Every subscriber
// gets every message exactly once, in the same order; `except` holds across instances; counts span instances.
import t from 'tap'
import { startRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/index.js'
import { startInstance, Client, type Instance } from './redis-helpers.js'

t.test('three instances, two clients each: every message once, in one order, except the sender', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const instances: Instance[] = []
  for (let i = 0; i < 3; i++) instances.push(await startInstance(redis.url))
  t.teardown(async () => { for (const i of instances) await i.close() })
  const clients: Client[] = []
  for (const i of instances) for (let k = 0; k < 2; k++) clients.push(await Client.connect(i.port, 'room'))
  t.teardown(() => { for (const c of clients) c.close() })
  for (const c of clients) t.match(c.subscribed, { status: 'live', topic: 'room', offset: 0 })

  // Every client and every instance publishes at once, interleaved: 6 clients × 20 + 3 servers × 20.
  const perSender = 20
  for (let n = 0; n < perSender; n++) {
    clients.forEach((c, k) => c.ws.send(JSON.stringify({ from: `c${k}`, n })))
    instances.forEach((inst, k) => { inst.app.websocketServer.publish('room', JSON.stringify({ from: `s${k}`, n })).catch(() => {}) })
  }
  const total = perSender * (clients.length + instances.length)
  await waitFor(() => clients.every((c) => c.received.length >= total - perSender), 10_000, 'every message everywhere')
  await new Promise((resolve) => setTimeout(resolve, 200))

  const key = (e: { data: unknown }): string => { const d = e.data as { from: string, n: number }; return `${d.from}:${d.n}` }
  clients.forEach((c, k) => {
    t.equal(c.received.length, total - perSender, `client ${k}: all but its own ${perSender}`)
    t.equal(new Set(c.received.map(key)).size, c.received.length, `client ${k}: no duplicate`)
    t.notOk(c.received.some((e) => (e.data as { from: string }).from === `c${k}`), `client ${k}: never its own message (except)`)
    const offsets = c.received.map((e) => e.offset)
    t.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]!), `client ${k}: offsets increase`)
    t.equal(new Set(c.received.map((e) => e.epoch)).size, 1, 'one epoch')
  })
  // The same order everywhere: each client's sequence is the global one (by offset) minus its own messages.
  const global = new Map<number, string>()
  for (const c of clients) for (const e of c.received) global.set(e.offset, key(e))
  t.equal(global.size, total, 'every offset was seen by someone, once')
  t.same([...global.keys()].sort((a, b) => a - b), Array.from({ length: total }, (_, i) => i + 1), 'offsets 1..N, no hole')
  clients.forEach((c, k) => {
    const expected = [...global.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v).filter((v) => !v.startsWith(`c${k}:`))
    t.same(c.received.map(key), expected, `client ${k}: the global order`)
  })
  // Per sender, FIFO: a sender's messages keep their order.
  for (const c of clients) {
    const byFrom = new Map<string, number[]>()
    for (const e of c.received) { const d = e.data as { from: string, n: number }; byFrom.set(d.from, [...(byFrom.get(d.from) ?? []), d.n]) }
    for (const [from, ns] of byFrom) if (from.startsWith('s')) t.same(ns, Array.from({ length: perSender }, (_, i) => i), `${from} in its own order`)
  }
})

t.test('counts span the instances; a closing instance removes its share at once', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url)
  const b = await startInstance(redis.url)
  t.teardown(async () => { await a.close(); await b.close() })
  const clients = [await Client.connect(a.port, 'lobby'), await Client.connect(a.port, 'lobby'), await Client.connect(b.port, 'lobby')]
  t.teardown(() => { for (const c of clients) c.close() })
  t.equal(a.app.websocketServer.subscriberCount('lobby'), 2, 'local count on a')
  // Each instance writes its changed counts every 100 ms: the other instance's share follows within that.
  await waitFor(async () => (await a.app.websocketServer.subscriberCounts('lobby')).total === 3, 1000, 'b\'s share written')
  const counts = await a.app.websocketServer.subscriberCounts('lobby')
  t.equal(counts.total, 3, 'three across both instances')
  t.same(Object.values(counts.instances).sort(), [1, 2])
  t.equal((await b.app.websocketServer.subscriberCounts('lobby')).total, 3, 'the same from b')
  clients[2]!.close()
  await waitFor(() => b.app.websocketServer.subscriberCount('lobby') === 0, 2000, 'b empty')
  await waitFor(async () => (await a.app.websocketServer.subscriberCounts('lobby')).total === 2, 2000, 'the count follows')
  await a.close()
  t.equal((await b.app.websocketServer.subscriberCounts('lobby')).total, 0, 'a closed: its share is gone at once')
})

t.test('a message is framed once per instance and an instance subscribes in Redis only while it has subscribers', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const a = await startInstance(redis.url)
  const b = await startInstance(redis.url)
  t.teardown(async () => { await a.close(); await b.close() })
  const channels = async (): Promise<string[]> => (await a.redis.call('PUBSUB', 'CHANNELS', '*') as string[]).sort()
  t.same(await channels(), [], 'no subscription before a subscriber')
  const c1 = await Client.connect(a.port, 'x')
  const c2 = await Client.connect(a.port, 'x')
  t.same(await channels(), ['ws:{x}'], 'one channel for the topic')
  t.equal(Number((await a.redis.call('PUBSUB', 'NUMSUB', 'ws:{x}') as [string, number])[1]), 1, 'one Redis subscription for two sockets')
  await b.app.websocketServer.publish('x', '{"hello":1}')
  await waitFor(() => c1.received.length === 1 && c2.received.length === 1, 2000, 'both')
  t.same(c1.received[0], { topic: 'x', epoch: c1.received[0]!.epoch, offset: 1, data: { hello: 1 } }, 'the JSON envelope carries the position')
  c1.close()
  c2.close()
  await waitFor(async () => (await channels()).length === 0, 2000, 'unsubscribed in Redis once the last socket left')
})
