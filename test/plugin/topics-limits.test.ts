/**
 * Topic limits: maxTopicsPerSocket and maxTopicLength, enforced by subscribe() with FST_WS_TOPIC_LIMIT whatever
 * the broker; publish() to a name over the limit returns 0; the options' validation; what one socket at the
 * limit costs.
 */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp, within, settledMemory, mib, type TestApp } from '../helpers/index.js'
import { errors, type TopicBroker, type WebSocketPluginOptions } from '../../lib/index.js'
import { MemoryTopics } from '../../lib/topics/memory.js'
import type { WebSocket } from '../../lib/socket/websocket.js'

interface Setup extends TestApp {
  /** The server socket of a new injected client on `path`. */
  serverSocket (path?: string): Promise<{ server: WebSocket, client: WebSocket }>
}

/** An app whose /ws (and /wide, with `routeOptions`) hands its server sockets to the test. */
async function setup (t: Test, options: WebSocketPluginOptions = {}, routeOptions: Record<string, unknown> = {}): Promise<Setup> {
  const built = await buildApp(options)
  const app: FastifyInstance = built.app
  t.teardown(() => app.close())
  let waiting: ((socket: WebSocket) => void) | null = null
  const hand = (socket: WebSocket): void => { waiting?.(socket) }
  app.get('/ws', { websocket: true }, hand)
  app.get('/wide', { websocket: routeOptions }, hand)
  await app.ready()
  return {
    ...built,
    async serverSocket (path = '/ws') {
      const server = within(new Promise<WebSocket>((resolve) => { waiting = resolve }), 2000, 'the server socket')
      const client = await app.injectWS(path)
      return { server: await server, client }
    }
  }
}

function refusal (fn: () => void): { code?: string, isRange: boolean, message: string, err: unknown } | null {
  try {
    fn()
    return null
  } catch (err) {
    return { code: (err as { code?: string }).code, isRange: err instanceof RangeError, message: (err as Error).message, err }
  }
}

t.test('a peer naming its topics cannot subscribe one socket past maxTopicsPerSocket (default 1,000)', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  // The handler subscribes to whatever room names the client sends: the case the limit is for.
  app.get('/rooms', { websocket: true }, (socket) => {
    socket.on('message', (name) => {
      try {
        socket.subscribe(name.toString())
        socket.send('ok')
      } catch (err) {
        socket.send((err as { code?: string }).code ?? 'error')
      }
    })
  })
  const client = await app.injectWS('/rooms')
  const replies: string[] = []
  const done = within(new Promise<void>((resolve) => {
    client.on('message', (data) => {
      replies.push(data.toString())
      if (replies.length === 1005) resolve()
    })
  }), 10_000, '1,005 replies')
  for (let i = 0; i < 1005; i++) client.send(`room-${i}`)
  await done
  t.equal(replies.filter((r) => r === 'ok').length, 1000, '1,000 subscriptions accepted')
  t.same(replies.slice(1000), Array(5).fill('FST_WS_TOPIC_LIMIT'), 'then each further one refused')
  t.equal(app.websocketServer.subscriberCount('room-999'), 1)
  t.equal(app.websocketServer.subscriberCount('room-1000'), 0, 'a refused topic reached no broker')
  client.close()
})

t.test('maxTopicsPerSocket: the refusal leaves the socket as it was; resubscribing or freeing a slot works', async (t) => {
  const { app, serverSocket } = await setup(t)
  const { server } = await serverSocket()
  for (let i = 0; i < 1000; i++) server.subscribe(`t${i}`)
  const err = refusal(() => server.subscribe('t1000'))
  t.equal(err?.code, 'FST_WS_TOPIC_LIMIT')
  t.ok(err?.isRange, 'a RangeError')
  t.match(err?.message, /already subscribed to 1000 topics; maxTopicsPerSocket is 1000/)
  t.ok(err?.err instanceof errors.FST_WS_TOPIC_LIMIT, 'exported for instanceof checks')
  t.equal(server.topics.size, 1000)
  t.notOk(server.isSubscribed('t1000'))
  t.equal(app.websocketServer.subscriberCount('t1000'), 0)
  t.equal(refusal(() => server.subscribe('t5')), null, 'a topic already held is not a new one')
  server.unsubscribe('t5')
  t.equal(refusal(() => server.subscribe('t1000')), null, 'a freed slot can be used')
  t.ok(server.isSubscribed('t1000'))
  t.equal((await app.websocketServer.publish('t1000', 'hi')).offset, 1)
})

t.test('maxTopicLength (default 256 UTF-16 code units): subscribe and publish refuse longer names', async (t) => {
  const { app, serverSocket } = await setup(t)
  const { server, client } = await serverSocket()
  const longest = 'x'.repeat(256)
  t.equal(refusal(() => server.subscribe(longest)), null, '256 characters are fine')
  const err = refusal(() => server.subscribe('x'.repeat(257)))
  t.equal(err?.code, 'FST_WS_TOPIC_LIMIT')
  t.match(err?.message, /257 characters long; maxTopicLength is 256/)
  // Counted in UTF-16 code units (String length): an emoji is two.
  t.equal(refusal(() => server.subscribe('😀'.repeat(128))), null)
  t.equal(refusal(() => server.subscribe('😀'.repeat(128) + 'a'))?.code, 'FST_WS_TOPIC_LIMIT')
  t.equal(refusal(() => server.subscribe('x'.repeat(10_000_000)))?.code, 'FST_WS_TOPIC_LIMIT', 'a huge name is refused too')
  t.same([...server.topics], [longest, '😀'.repeat(128)])

  const got: string[] = []
  client.on('message', (data) => got.push(data.toString()))
  // Nobody can hold such a name, and a broker with history would keep it (in memory, or as Redis keys).
  t.throws(() => app.websocketServer.publish('x'.repeat(257), 'never'), { code: 'FST_WS_TOPIC_LIMIT' }, 'publish to a name over the limit')
  t.throws(() => app.websocketServer.publish('x'.repeat(10_000_000), 'never'), { code: 'FST_WS_TOPIC_LIMIT' })
  t.equal((await app.websocketServer.publish(longest, 'delivered')).offset, 1)
  await within(new Promise<void>((resolve) => { client.once('message', () => resolve()) }), 2000, 'the published message')
  t.same(got, ['delivered'])
})

t.test('plugin options set the limits, a route can override them, Infinity lifts them', async (t) => {
  const { serverSocket } = await setup(t, { maxTopicsPerSocket: 2, maxTopicLength: 4 }, { maxTopicsPerSocket: Infinity, maxTopicLength: 6 })
  const { server } = await serverSocket('/ws')
  server.subscribe('a')
  server.subscribe('abcd')
  t.equal(refusal(() => server.subscribe('c'))?.code, 'FST_WS_TOPIC_LIMIT')
  server.unsubscribe('a')
  t.equal(refusal(() => server.subscribe('abcde'))?.code, 'FST_WS_TOPIC_LIMIT')

  const { server: wide } = await serverSocket('/wide')
  for (let i = 0; i < 2000; i++) wide.subscribe(`w${i}`)
  t.equal(wide.topics.size, 2000, 'no count limit on this route')
  wide.subscribe('abcdef')
  t.equal(refusal(() => wide.subscribe('abcdefg'))?.code, 'FST_WS_TOPIC_LIMIT', 'its own length limit')
})

t.test('the options are validated like every other: FST_WS_INVALID_OPTION naming the option', async (t) => {
  for (const name of ['maxTopicsPerSocket', 'maxTopicLength'] as const) {
    for (const bad of [0, -1, 1.5, NaN, '10', null, -Infinity]) {
      await t.rejects(buildApp({ [name]: bad } as unknown as WebSocketPluginOptions),
        { code: 'FST_WS_INVALID_OPTION', message: new RegExp(`"${name}": expected a positive integer or Infinity`) }, `${name}: ${String(bad)}`)
    }
    const built = await buildApp()
    t.teardown(() => built.app.close())
    t.throws(() => built.app.get(`/bad-${name}`, { websocket: { [name]: 0 } }, () => {}),
      { code: 'FST_WS_INVALID_OPTION', message: new RegExp(`"websocket.${name}"`) }, 'route option too')
  }
})

t.test('the limits hold whatever the broker: a custom TopicBroker never sees a refused topic', async (t) => {
  const calls: string[] = []
  const memory = new MemoryTopics()
  const broker: TopicBroker = {
    subscribe (socket, topic, options) { calls.push(`+${topic}`); return memory.subscribe(socket, topic, options) },
    unsubscribe (socket, topic) { calls.push(`-${topic}`); memory.unsubscribe(socket, topic) },
    publish: (topic, data, binary, except) => memory.publish(topic, data, binary, except),
    subscriberCount: (topic) => memory.subscriberCount(topic),
    subscriberCounts: (topic) => memory.subscriberCounts(topic)
  }
  const { app, serverSocket } = await setup(t, { topics: broker, maxTopicsPerSocket: 2, maxTopicLength: 3 })
  t.equal(app.websocketServer.topics, broker, 'the configured broker stays the server\'s broker')
  const { server, client } = await serverSocket()
  server.subscribe('a')
  t.equal(refusal(() => server.subscribe('long'))?.code, 'FST_WS_TOPIC_LIMIT')
  server.subscribe('b')
  t.equal(refusal(() => server.subscribe('c'))?.code, 'FST_WS_TOPIC_LIMIT')
  t.same(calls, ['+a', '+b'])
  const closed = within(new Promise<void>((resolve) => { server.once('close', () => resolve()) }), 2000, 'close')
  client.close()
  await closed
  t.same(calls.slice(2).sort(), ['-a', '-b'], 'a closing socket leaves the broker')
})

t.test('one socket at the limit (1,000 topics of 256 characters): what it holds, and its close', async (t) => {
  const { app, serverSocket } = await setup(t)
  const { server, client } = await serverSocket()
  const name = (i: number): string => `${i}:`.padEnd(256, 'x')
  const before = await settledMemory()
  // The names are made here, as a peer's would be: the subscriptions are what keeps them.
  for (let i = 0; i < 1000; i++) server.subscribe(name(i))
  t.equal(refusal(() => server.subscribe('one more'))?.code, 'FST_WS_TOPIC_LIMIT')
  const held = await settledMemory()
  const heap = held.heapUsed - before.heapUsed
  t.comment(`1,000 topics on one socket: heap +${mib(heap)}`)
  t.ok(heap < 16 * 1024 * 1024, `bounded: ${mib(heap)} (sanity bound 16 MiB)`)

  const closed = within(new Promise<void>((resolve) => { server.once('close', () => resolve()) }), 2000, 'close')
  const start = performance.now()
  client.terminate()
  await closed
  t.comment(`closing it (unsubscribing 1,000 topics included): ${(performance.now() - start).toFixed(1)} ms`)
  t.equal(server.topics.size, 0)
  t.equal(Array.from({ length: 1000 }, (_, i) => app.websocketServer.subscriberCount(name(i))).filter((n) => n !== 0).length, 0,
    'every topic released')
})
