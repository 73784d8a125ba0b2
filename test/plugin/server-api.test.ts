// app.websocketServer: only its documented API (clients, topics, publish, channel, subscriberCount(s)), and publish() refuses
// what send() refuses with the same FST_WS_INVALID_DATA.
import t from 'tap'
import { buildApp } from '../helpers/index.js'

t.test('websocketServer exposes its documented members and nothing internal', async (t) => {
  const { app } = await buildApp()
  await app.ready()
  t.teardown(() => app.close())
  const server = app.websocketServer
  t.same(Object.keys(server).sort(), ['clients', 'topics'], 'own enumerable members')
  const proto = Object.getOwnPropertyNames(Object.getPrototypeOf(server)).sort()
  t.same(proto, ['channel', 'constructor', 'publish', 'request', 'subscriberCount', 'subscriberCounts'], 'methods')
  for (const name of ['_clients', '_closing', '_closeAll']) t.notOk(name in server, `no ${name}`)
})

t.test('publish() converts data like send(): FST_WS_INVALID_DATA for anything else, subscribers or not', async (t) => {
  const { app } = await buildApp()
  app.get('/ws', { websocket: true }, (socket) => { socket.subscribe('room') })
  await app.ready()
  t.teardown(() => app.close())
  const publish = app.websocketServer.publish.bind(app.websocketServer) as (topic: string, data: unknown) => Promise<unknown>
  const bad: unknown[] = [42, null, undefined, { text: 'hi' }, true, Symbol('s')]
  for (const data of bad) {
    t.throws(() => publish('nobody', data), { code: 'FST_WS_INVALID_DATA' }, `${String(data)} with no subscriber`)
  }
  const ws = await app.injectWS('/ws')
  t.teardown(() => ws.terminate())
  t.equal(app.websocketServer.subscriberCount('room'), 1)
  for (const data of bad) {
    t.throws(() => publish('room', data), { code: 'FST_WS_INVALID_DATA' }, `${String(data)} with a subscriber`)
  }
  const got: Array<[string, boolean]> = []
  ws.on('message', (data, isBinary) => got.push([data.toString(), isBinary]))
  t.match(await publish('room', 'text'), { topic: 'room', offset: 1 })
  t.match(await publish('room', new Uint8Array([104, 105])), { offset: 2 })
  t.match(await publish('room', new ArrayBuffer(2)), { offset: 3 })
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(got, [['text', false], ['hi', true], ['\0\0', true]], 'valid data is delivered as before')
})
