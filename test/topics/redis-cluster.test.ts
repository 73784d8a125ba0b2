// Redis Cluster: given an ioredis Cluster client, the broker uses sharded pub/sub (SSUBSCRIBE/SPUBLISH), so a topic's
// messages travel only through the shard that owns its slot. Three masters started by the test, three instances.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { Cluster } from 'ioredis'
import websocket, { RedisTopics } from '../../lib/index.js'
import { startRedisCluster, redisCommand } from '../helpers/redis.js'
import { waitFor } from '../helpers/index.js'
import { Client } from './redis-helpers.js'

t.test('three masters, three instances: every topic in order on every instance, each on its own shard only', async (t) => {
  const cluster = await startRedisCluster({ masters: 3 })
  t.teardown(() => cluster.stop())
  const instances: Array<{ app: FastifyInstance, port: number, client: Cluster }> = []
  t.teardown(async () => { for (const i of instances) { await i.app.close(); i.client.disconnect() } })
  for (let k = 0; k < 3; k++) {
    const client = new Cluster([{ host: '127.0.0.1', port: cluster.nodes[k]!.port }])
    client.on('error', () => {})
    const app = Fastify() as unknown as FastifyInstance
    await app.register(websocket, { ports: 'any', topics: new RedisTopics({ client, envelope: 'json' }) })
    app.get<{ Params: { topic: string } }>('/t/:topic', { websocket: true }, async (socket, request) => {
      const result = await socket.subscribe(request.params.topic)
      socket.send(JSON.stringify({ subscribed: result }))
    })
    await app.listen({ host: '127.0.0.1', port: 0 })
    instances.push({ app, port: (app.server.address() as { port: number }).port, client })
  }
  // Topics spread over the slots: with 12 names each master owns some.
  const topics = Array.from({ length: 12 }, (_, i) => `room-${i}`)
  const clients: Array<{ topic: string, c: Client }> = []
  for (const topic of topics) for (const i of instances) clients.push({ topic, c: await Client.connect(i.port, topic) })
  t.teardown(() => { for (const { c } of clients) c.close() })

  const perTopic = 30
  await Promise.all(topics.map(async (topic, ti) => {
    for (let n = 1; n <= perTopic; n++) await instances[(n + ti) % 3]!.app.websocketServer.publish(topic, JSON.stringify(n))
  }))
  await waitFor(() => clients.every(({ c }) => c.received.length === perTopic), 10_000, 'every message on every instance')
  for (const { topic, c } of clients) {
    t.same(c.received.map((e) => e.data), Array.from({ length: perTopic }, (_, i) => i + 1), `${topic}: 1..${perTopic} in order`)
  }

  // Where the subscriptions live: each channel on exactly one master, as a shard channel; no classic channel.
  const owners = new Map<string, number>()
  for (const [k, node] of cluster.nodes.entries()) {
    const shard = await redisCommand(node.port, ['PUBSUB', 'SHARDCHANNELS']) as string[]
    const classic = await redisCommand(node.port, ['PUBSUB', 'CHANNELS']) as string[]
    t.same(classic, [], `master ${k}: no classic (broadcast) channel`)
    for (const ch of shard) {
      t.notOk(owners.has(ch), `${ch} is subscribed on one master only`)
      owners.set(ch, k)
    }
  }
  t.same([...owners.keys()].sort(), topics.map((x) => `ws:{${x}}`).sort(), 'every topic has its shard channel')
  t.ok(new Set(owners.values()).size > 1, `the topics are spread over ${new Set(owners.values()).size} masters`)
  const counts = await instances[0]!.app.websocketServer.subscriberCounts('room-0')
  t.equal(counts.total, 3, 'counts work on a cluster too')
})
