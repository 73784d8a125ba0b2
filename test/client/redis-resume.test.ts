// Resume across instances: two Fastify instances joined by RedisTopics on a real redis-server, the client behind a
// TCP proxy that sends each new connection to the instance the test chooses. What is published while the client
// is away arrives after it reconnects to the other instance, once each and in order; beyond the history, a 'gap'.
import t from 'tap'
import { createServer, connect as tcpConnect, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import Fastify, { type FastifyInstance } from 'fastify'
import websocket, { ENVELOPE_PROTOCOL, RedisTopics, type WebSocket as AnySocket } from '../../lib/index.js'
import { connect, type Gap } from '../../lib/client/index.js'
import { NodeWebSocket } from '../../lib/client/node-transport.js'
import { startRedis } from '../helpers/redis.js'
import { waitFor, within } from '../helpers/index.js'

t.setTimeout(60_000)
type WebSocket = AnySocket<string, unknown, unknown>
const schema = { type: 'object', properties: { n: { type: 'integer' } } } as const

interface Instance { app: FastifyInstance, port: number, sockets: WebSocket[], close (): Promise<void> }

async function startInstance (url: string): Promise<Instance> {
  const redis = new Redis(url, { maxRetriesPerRequest: 2, retryStrategy: () => 100 })
  redis.on('error', () => {})
  const app = Fastify() as unknown as FastifyInstance
  await app.register(websocket, { ports: 'any', topics: new RedisTopics({ client: redis, history: { size: 5 } }) })
  const sockets: WebSocket[] = []
  app.get('/live', { websocket: { protocols: [ENVELOPE_PROTOCOL], messages: { receive: schema, send: schema } } }, async (socket) => {
    const s = socket as WebSocket
    sockets.push(s)
    const since = (await s.clientPositions()).get('news')
    await s.subscribe('news', since === undefined ? undefined : { since })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    app,
    port: (app.server.address() as { port: number }).port,
    sockets,
    async close () { await app.close(); redis.disconnect() }
  }
}

/** New connections go to `target` (none: refused at once); existing ones stay where they are. */
async function switchProxy (): Promise<{ port: number, target: number | null, close (): Promise<void> }> {
  const open: Socket[] = []
  const proxy = {
    port: 0,
    target: null as number | null,
    async close () { for (const s of open) s.destroy(); await new Promise((resolve) => server.close(resolve)) }
  }
  const server = createServer((a) => {
    a.on('error', () => {})
    if (proxy.target === null) { a.destroy(); return }
    const b = tcpConnect(proxy.target, '127.0.0.1')
    b.on('error', () => {})
    open.push(a, b)
    a.pipe(b).pipe(a)
    a.on('close', () => b.destroy())
    b.on('close', () => a.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  proxy.port = (server.address() as { port: number }).port
  return proxy
}

t.test('resume on another instance: no loss, no duplicate; beyond the history a gap', async (t) => {
  const redisServer = await startRedis()
  t.teardown(() => redisServer.stop())
  const a = await startInstance(redisServer.url)
  t.teardown(() => a.close())
  const b = await startInstance(redisServer.url)
  t.teardown(() => b.close())
  const proxy = await switchProxy()
  t.teardown(() => proxy.close())

  proxy.target = a.port
  const client = connect(`ws://127.0.0.1:${proxy.port}/live`, { WebSocket: NodeWebSocket, reconnect: { base: 20, cap: 50 } })
  t.teardown(() => client.close())
  const got: Array<[unknown, number | undefined]> = []
  const gaps: Gap[] = []
  client.on('message', (m, topic) => { got.push([(m as { n: number }).n, topic?.offset]) })
  client.on('gap', (gap) => { gaps.push(gap) })
  let opens = 0
  client.on('open', () => { opens++ })
  await waitFor(() => a.sockets.length === 1 && a.sockets[0]!.isSubscribed('news'), 5000, 'subscribed on A')

  const publish = async (from: Instance, first: number, last: number): Promise<void> => {
    for (let n = first; n <= last; n++) await from.app.websocketServer.publish('news', JSON.stringify({ n }))
  }
  await publish(b, 1, 3) // from the other instance, through Redis
  await waitFor(() => got.length === 3, 5000, 'messages 1-3')

  // Away: A's connection drops, nothing can connect; 4 and 5 are published meanwhile; then B takes the client.
  proxy.target = null
  a.sockets[0]!.terminate()
  await waitFor(() => client.state !== 'open', 2000, 'the drop')
  await publish(a, 4, 5)
  proxy.target = b.port
  await waitFor(() => opens === 2 && b.sockets.length === 1 && b.sockets[0]!.isSubscribed('news'), 5000, 'resubscribed on B')
  await publish(a, 6, 6)
  await waitFor(() => got.length === 6, 5000, 'messages 4-6')
  t.same(got.map(([n]) => n), [1, 2, 3, 4, 5, 6], 'no loss, no duplicate, in order, across instances')
  t.same(got.map(([, offset]) => offset), [1, 2, 3, 4, 5, 6])
  t.same(gaps, [])

  // Away for longer than the history (5): a gap, then live messages again.
  proxy.target = null
  b.sockets[0]!.terminate()
  await waitFor(() => client.state !== 'open', 2000, 'the second drop')
  await publish(b, 7, 16)
  proxy.target = a.port
  await waitFor(() => gaps.length === 1, 5000, 'the gap')
  t.match(gaps[0], { topic: 'news', reason: 'history-expired' })
  await waitFor(() => a.sockets.length === 2 && a.sockets[1]!.isSubscribed('news'), 5000, 'resubscribed on A')
  await publish(b, 17, 17)
  await within(new Promise<void>((resolve) => {
    const check = (): void => { if (got.at(-1)?.[0] === 17) resolve(); else setTimeout(check, 10) }
    check()
  }), 5000, 'message 17')
  const after = got.slice(6).map(([n]) => n as number)
  t.same(after.at(-1), 17, 'live again after the gap')
  t.same(after, [...after].sort((x, y) => x - y), 'in order')
  t.equal(new Set(after).size, after.length, 'no duplicate')
  t.ok(after.every((n) => n > gaps[0]!.offset), `only messages after the gap's offset (${gaps[0]!.offset})`)
})
