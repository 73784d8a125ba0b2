// Type-level tests of topics, positions and the brokers: compiled by `npm test`, never run.
import Fastify from 'fastify'
import { Redis, Cluster } from 'ioredis'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import websocket, {
  MemoryTopics, RedisTopics, type SubscribeResult, type TopicGap, type PublishResult, type SubscriberCounts, type TopicMessage
} from '../lib/index.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectType<T> (_value: T): void {}
function assertEqual<A, B> (_proof: Equal<A, B>): void {}

// The app's own ioredis client, plain or cluster: no Redis type of the plugin's.
const redis = new Redis({ lazyConnect: true })
const cluster = new Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true })
const onRedis = new RedisTopics({ client: redis, envelope: 'json', history: { size: 500, ttl: 60_000 }, publishTimeout: 2000, presenceTtl: 15_000 })
expectType<RedisTopics>(new RedisTopics({ client: cluster, prefix: 'chat:' }))
// @ts-expect-error the client must be an ioredis client
void new RedisTopics({ client: {} })
// @ts-expect-error envelope is 'none', 'json' or a function
void new RedisTopics({ client: redis, envelope: 'xml' })
expectType<MemoryTopics>(new MemoryTopics({ envelope: (m: TopicMessage) => `${m.offset}:${m.data.toString()}` }))
// @ts-expect-error history.size is a number
void new MemoryTopics({ history: { size: '10' } })

const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
await app.register(websocket, { topics: onRedis })

app.get('/t', { websocket: { messages: { receive: Type.Object({ since: Type.Optional(Type.Object({ epoch: Type.String(), offset: Type.Integer() })) }) } } }, async (socket) => {
  const result = await socket.subscribe('room', { since: { epoch: 'e', offset: 3 } })
  expectType<SubscribeResult>(result)
  switch (result.status) {
    case 'recovered':
      expectType<number>(result.replayed)
      expectType<string>(result.epoch)
      break
    case 'gap':
      assertEqual<typeof result.reason, 'epoch-changed' | 'history-expired' | 'unknown-position' | 'broker-unavailable'>(true)
      break
    case 'cancelled':
      // @ts-expect-error a cancelled subscription has no position
      void result.offset
      break
  }
  await socket.subscribe('room', { since: 'history' })
  // @ts-expect-error since is a position or 'history'
  await socket.subscribe('room', { since: 'latest' })
  // @ts-expect-error a position has an epoch
  await socket.subscribe('room', { since: { offset: 1 } })
  socket.on('topicGap', (gap) => { expectType<TopicGap>(gap) })
  // @ts-expect-error a topicGap listener gets one TopicGap
  socket.on('topicGap', (gap: string) => gap)

  // publish's except takes this route's typed socket.
  expectType<Promise<PublishResult>>(app.websocketServer.publish('room', 'hi', { except: socket }))
  // @ts-expect-error except is a socket
  void app.websocketServer.publish('room', 'hi', { except: {} })
  const news = app.websocketServer.channel(Type.Object({ headline: Type.String() }))
  expectType<Promise<PublishResult>>(news.publish('room', { headline: 'x' }, { except: socket }))
  expectType<Promise<SubscriberCounts>>(app.websocketServer.subscriberCounts('room'))
  expectType<number>(app.websocketServer.subscriberCount('room'))
})
