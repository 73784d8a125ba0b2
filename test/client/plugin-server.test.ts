// The client against the plugin's own server side of the envelope (a route listing ENVELOPE_PROTOCOL with
// message schemas): typed requests both ways, an invalid request refused by the schema, resume after a dropped
// connection with no loss and no duplicate, a topic request to a subscriber that never answers.
import t from 'tap'
import { buildApp, listen, waitFor, within } from '../helpers/index.js'
import { ENVELOPE_PROTOCOL, MemoryTopics, type WebSocket as AnySocket } from '../../lib/index.js'
import { connect, RequestFailedError, SUBPROTOCOL, type Client, type ServerContract } from '../../lib/client/index.js'
import { NodeWebSocket } from '../../lib/client/node-transport.js'

type Up = { type: 'ask', n: number } | { type: 'slow' }
type Down = { type: string, n?: number }
type WebSocket = AnySocket<string, unknown, unknown>

const receive = {
  type: 'object',
  properties: { type: { enum: ['ask', 'slow', 'answer'] }, n: { type: 'integer' } },
  required: ['type'],
  additionalProperties: false
} as const
const send = { type: 'object', properties: { type: { type: 'string' }, n: { type: 'integer' } }, required: ['type'] } as const

function next (client: Client<ServerContract<Up, Down>>, event: 'open'): Promise<void> {
  return within(new Promise<void>((resolve) => {
    const l = (): void => { client.off(event, l); resolve() }
    client.on(event, l)
  }), 3000, `'${event}'`)
}

t.test('the client and the plugin speak the same envelope', async (t) => {
  t.equal(SUBPROTOCOL, ENVELOPE_PROTOCOL)
  const { app } = await buildApp({ topics: new MemoryTopics({ history: { size: 100, ttl: 60_000 } }) }, {}, 'warn')
  const sockets: WebSocket[] = []
  app.get('/chat', { websocket: { protocols: [ENVELOPE_PROTOCOL], messages: { receive, send } } }, async (socket) => {
    const s = socket as WebSocket
    sockets.push(s)
    s.onRequest((m) => {
      const ask = m as Up
      return ask.type === 'ask' ? { type: 'answer', n: ask.n * 2 } : new Promise<never>(() => {})
    })
    const positions = await s.clientPositions()
    await s.subscribe('news', { since: positions.get('news') ?? 'history' })
  })
  const port = await listen(app)
  t.teardown(() => app.close())

  const client = connect<ServerContract<Up, Down>>(`ws://127.0.0.1:${port}/chat`, {
    WebSocket: NodeWebSocket, reconnect: { base: 10, cap: 50 }
  })
  t.teardown(() => client.close())
  const got: Array<[Down, string | undefined, number | undefined]> = []
  client.on('message', (m, topic) => { got.push([m, topic?.topic, topic?.offset]) })
  client.onRequest((m) => ({ type: 'ask', n: m.n ?? 0 }))
  await next(client, 'open')

  t.same(await client.request({ type: 'ask', n: 21 }), { type: 'answer', n: 42 }, 'a request answered by socket.onRequest()')
  const invalid = await client.request({ type: 'nope' } as unknown as Up).catch((e: unknown) => e)
  t.ok(invalid instanceof RequestFailedError && invalid.reason === 'invalid', "the route's schema refused it: \"invalid\"")
  await waitFor(() => sockets.length === 1, 2000, 'the server socket')
  t.same(await within(sockets[0]!.request({ type: 'question', n: 5 }), 3000, 'the reply'), { type: 'ask', n: 5 }, 'socket.request() answered by client.onRequest()')

  // Topic messages, then a drop: what is published meanwhile arrives after the resume, once each.
  await waitFor(() => sockets[0]!.isSubscribed('news'), 2000, 'subscribed')
  for (let n = 1; n <= 3; n++) await app.websocketServer.publish('news', JSON.stringify({ type: 'news', n }))
  await waitFor(() => got.length === 3, 2000, 'three topic messages')
  const reopened = next(client, 'open')
  sockets[0]!.terminate()
  for (let n = 4; n <= 6; n++) await app.websocketServer.publish('news', JSON.stringify({ type: 'news', n }))
  await reopened
  await waitFor(() => sockets.length === 2 && sockets[1]!.isSubscribed('news'), 3000, 'resubscribed')
  await app.websocketServer.publish('news', JSON.stringify({ type: 'news', n: 7 }))
  await waitFor(() => got.length === 7, 3000, 'seven topic messages')
  t.same(got.map(([m, topic, offset]) => [m.n, topic, offset]), [1, 2, 3, 4, 5, 6, 7].map((n) => [n, 'news', n]), 'no loss, no duplicate, in order')
  t.equal(client.positions.news?.offset, 7)

  // A topic request to a subscriber whose handler never answers: the server learns it timed out.
  client.onRequest(() => new Promise(() => {}))
  const outcomes = await within(app.websocketServer.request('news', { type: 'question', n: 1 }, { timeout: 200 }), 3000, 'the topic request')
  t.equal(outcomes.length, 1)
  t.match(outcomes[0], { ok: false, error: { code: 'FST_WS_REQUEST_TIMEOUT' } })
})

t.test('a refused resume, then the recent history again (what the example app does): the client shows the history', async (t) => {
  // The server could not honour the client's position (here: the process restarted, so a new epoch), says so
  // with a gap, and replays the recent history instead. Those messages are at or before the gap's offset: a
  // client that took the gap's offset as its position would drop them as already seen.
  const { app } = await buildApp({ topics: new MemoryTopics({ history: { size: 100, ttl: 60_000 } }) }, {}, 'warn')
  app.get('/chat', { websocket: { protocols: [ENVELOPE_PROTOCOL], messages: { receive, send } } }, async (socket) => {
    const s = socket as WebSocket
    const positions = await s.clientPositions()
    const result = await s.subscribe('news', { since: positions.get('news') ?? 'history' })
    if (result.status === 'gap') {
      s.unsubscribe('news')
      await s.subscribe('news', { since: 'history' })
    }
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  for (let n = 1; n <= 3; n++) await app.websocketServer.publish('news', JSON.stringify({ type: 'news', n }))
  const client = connect<ServerContract<Up, Down>>(`ws://127.0.0.1:${port}/chat`, {
    WebSocket: NodeWebSocket, reconnect: false, positions: { news: { epoch: 'an-old-epoch', offset: 7 } }
  })
  t.teardown(() => client.close())
  const got: number[] = []
  const gaps: unknown[] = []
  client.on('message', (m) => { got.push(m.n ?? -1) })
  client.on('gap', (gap) => { gaps.push(gap) })
  await waitFor(() => got.length === 3, 3000, 'the recent history after the gap')
  t.match(gaps, [{ topic: 'news', reason: 'epoch-changed' }], 'told first')
  t.same(got, [1, 2, 3], 'then shown the history, once')
})
