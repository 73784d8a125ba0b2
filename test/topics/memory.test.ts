// The in-memory broker: positions, history (count and age), resume with since, 'history', envelopes, options.
import t, { type Test } from 'tap'
import { buildApp, listen, RawWs, waitFor } from '../helpers/index.js'
import { MemoryTopics, type SubscribeResult, type WebSocket, type TopicEnvelope } from '../../lib/index.js'

async function setup (t: Test, topics: MemoryTopics) {
  const { app } = await buildApp({ topics })
  const sockets: WebSocket[] = []
  app.get('/ws', { websocket: true }, (socket) => { sockets.push(socket) })
  const port = await listen(app)
  t.teardown(() => app.close())
  const connect = async (): Promise<{ server: WebSocket, client: RawWs }> => {
    const client = await RawWs.connect(port, '/ws')
    t.teardown(() => client.destroy())
    await waitFor(() => sockets.length > 0, 2000, 'server socket')
    return { server: sockets.shift()!, client }
  }
  return { app, connect }
}

const texts = (c: RawWs): string[] => c.messages.map((f) => f.payload.toString())

t.test('positions: offsets from 1 per topic, one epoch per topic; subscribe results', async (t) => {
  const { app, connect } = await setup(t, new MemoryTopics())
  const { server, client } = await connect()
  const live = await server.subscribe('a')
  t.match(live, { status: 'live', topic: 'a', offset: 0 })
  const p1 = await app.websocketServer.publish('a', 'x')
  const p2 = await app.websocketServer.publish('a', 'y')
  const q1 = await app.websocketServer.publish('b', 'z')
  t.same([p1.offset, p2.offset, q1.offset], [1, 2, 1], 'each topic counts its own')
  t.equal(p1.epoch, p2.epoch)
  t.not(p1.epoch, q1.epoch, 'epochs are per topic')
  t.equal(p1.epoch, (live as Extract<SubscribeResult, { status: 'live' }>).epoch)
  await waitFor(() => client.messages.length === 2, 2000, 'two')
  t.same(texts(client), ['x', 'y'])
})

t.test('resume: inside the history, at its edge, beyond, ahead, other epoch; history replays all', async (t) => {
  const { app, connect } = await setup(t, new MemoryTopics({ history: { size: 5 } }))
  const { server: first } = await connect()
  const { epoch } = (await first.subscribe('room')) as { epoch: string }
  for (let i = 1; i <= 8; i++) await app.websocketServer.publish('room', `m${i}`)
  const cases: Array<[string, Parameters<WebSocket['subscribe']>[1], Partial<SubscribeResult>, string[]]> = [
    ['inside', { since: { epoch, offset: 5 } }, { status: 'recovered', replayed: 3, offset: 8 }, ['m6', 'm7', 'm8']],
    ['edge', { since: { epoch, offset: 3 } }, { status: 'recovered', replayed: 5 }, ['m4', 'm5', 'm6', 'm7', 'm8']],
    ['beyond', { since: { epoch, offset: 2 } }, { status: 'gap', reason: 'history-expired', offset: 8 }, []],
    ['current', { since: { epoch, offset: 8 } }, { status: 'recovered', replayed: 0 }, []],
    ['ahead', { since: { epoch, offset: 9 } }, { status: 'gap', reason: 'unknown-position' }, []],
    ['epoch', { since: { epoch: 'other', offset: 3 } }, { status: 'gap', reason: 'epoch-changed' }, []],
    ['history', { since: 'history' }, { status: 'recovered', replayed: 5 }, ['m4', 'm5', 'm6', 'm7', 'm8']]
  ]
  const clients: RawWs[] = []
  for (const [name, options, result, replay] of cases) {
    const { server, client } = await connect()
    t.match(await server.subscribe('room', options), result, `${name}: result`)
    await new Promise((resolve) => setTimeout(resolve, 20))
    t.same(texts(client), replay, `${name}: replayed`)
    clients.push(client)
  }
  await app.websocketServer.publish('room', 'live')
  await waitFor(() => clients.every((c) => texts(c).at(-1) === 'live'), 2000, 'everyone live')
  t.throws(() => first.subscribe('other', { since: { epoch, offset: -1 } }), { code: 'FST_WS_INVALID_TOPIC' })
  t.throws(() => first.subscribe('other', { since: 'all' as 'history' }), { code: 'FST_WS_INVALID_TOPIC' })
  t.throws(() => first.subscribe('other', null as unknown as undefined), { code: 'FST_WS_INVALID_TOPIC' })
})

t.test('the age limit drops old messages; an idle topic nobody holds is swept', async (t) => {
  const topics = new MemoryTopics({ history: { size: 100, ttl: 60 } })
  const { app, connect } = await setup(t, topics)
  const { server: holder } = await connect()
  await holder.subscribe('aging') // keeps the topic's state while its history ages
  const p = await app.websocketServer.publish('aging', 'old')
  await new Promise((resolve) => setTimeout(resolve, 120))
  await app.websocketServer.publish('aging', 'new')
  const { server, client } = await connect()
  t.match(await server.subscribe('aging', { since: { epoch: p.epoch, offset: 0 } }), { status: 'gap', reason: 'history-expired' })
  holder.unsubscribe('aging')
  t.match(await server.subscribe('aging2', { since: 'history' }), { status: 'recovered', replayed: 0 })
  t.same(texts(client), [])
  server.unsubscribe('aging')
  // The sweeper runs every min(ttl, 60 s): the topic's state is gone, so its next message starts a new epoch.
  await new Promise((resolve) => setTimeout(resolve, 200))
  const again = await app.websocketServer.publish('aging', 'later')
  t.equal(again.offset, 1, 'a new topic state')
  t.not(again.epoch, p.epoch, 'in a new epoch: old positions cannot be mistaken for new ones')
})

t.test('history off (size 0): no state for topics nobody holds, resume always a gap', async (t) => {
  const { app, connect } = await setup(t, new MemoryTopics({ history: { size: 0 } }))
  t.same(await app.websocketServer.publish('nobody', 'x'), { topic: 'nobody', epoch: '', offset: 0 }, 'nothing kept')
  const { server } = await connect()
  const { epoch } = (await server.subscribe('t')) as { epoch: string }
  await app.websocketServer.publish('t', 'x')
  const { server: second } = await connect()
  t.match(await second.subscribe('t', { since: { epoch, offset: 0 } }), { status: 'gap', reason: 'history-expired' })
})

t.test('the history keeps its own copy of the payload', async (t) => {
  const { app, connect } = await setup(t, new MemoryTopics())
  const data = Buffer.from('abc')
  const p = await app.websocketServer.publish('copy', data)
  data.fill(0x78)
  const { server, client } = await connect()
  await server.subscribe('copy', { since: { epoch: p.epoch, offset: 0 } })
  await waitFor(() => client.messages.length === 1, 2000, 'replay')
  t.equal(client.messages[0]!.payload.toString(), 'abc', 'not the caller\'s later change')
})

t.test('envelopes: json (text and binary payloads) and a function; invalid options', async (t) => {
  const custom: TopicEnvelope = (m) => `${m.topic}#${m.offset}:${m.data.toString()}`
  for (const [envelope, check] of [
    ['json', (frames: string[], epoch: string) => {
      t.same(JSON.parse(frames[0]!), { topic: 't', epoch, offset: 1, data: { a: 1 } })
      t.same(JSON.parse(frames[1]!), { topic: 't', epoch, offset: 2, data: Buffer.from([1, 2]).toString('base64'), binary: true })
    }],
    [custom, (frames: string[]) => { t.same(frames, ['t#1:{"a":1}', 't#2:\u0001\u0002']) }]
  ] as const) {
    const { app, connect } = await setup(t, new MemoryTopics({ envelope }))
    const { server, client } = await connect()
    const { epoch } = (await server.subscribe('t')) as { epoch: string }
    await app.websocketServer.publish('t', '{"a":1}')
    await app.websocketServer.publish('t', Buffer.from([1, 2]))
    await waitFor(() => client.messages.length === 2, 2000, 'two')
    t.same(client.messages.map((f) => f.opcode), [1, 1], 'text frames')
    check(texts(client), epoch)
  }
  for (const bad of [null, 'x', { envelope: 'xml' }, { history: { size: -1 } }, { history: { ttl: 0 } }, { history: { size: 1, depth: 2 } }, { history: 5 }]) {
    t.throws(() => new MemoryTopics(bad as never), { code: 'FST_WS_INVALID_BROKER_OPTION' }, JSON.stringify(bad))
  }
})

t.test('subscriberCounts on one instance; publish rejections are logged when nobody awaits them', async (t) => {
  const failing = new MemoryTopics()
  failing.publish = async () => { throw new Error('broker down') }
  const { app, connect } = await setup(t, failing)
  const { server } = await connect()
  await server.subscribe('c')
  const counts = await app.websocketServer.subscriberCounts('c')
  t.equal(counts.total, 1)
  t.same(Object.values(counts.instances), [1])
  t.throws(() => app.websocketServer.subscriberCounts(''), { code: 'FST_WS_INVALID_TOPIC' })
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => { unhandled.push(err) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => process.removeListener('unhandledRejection', onUnhandled))
  void app.websocketServer.publish('c', 'fire and forget')
  await t.rejects(app.websocketServer.publish('c', 'awaited'), { message: 'broker down' }, 'the caller who awaits sees the failure')
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(unhandled, [], 'no unhandled rejection')
})
