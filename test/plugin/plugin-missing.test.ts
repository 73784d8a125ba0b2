// A WebSocket route declared where the plugin does not reach (a sibling encapsulation context, or before the
// plugin was registered) fails the boot with FST_WS_PLUGIN_MISSING instead of answering upgrades with
// "500 socket.send is not a function" at request time.
import t from 'tap'
import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify'
import websocket, { type WebSocket } from '../../lib/index.js'
import { within } from '../helpers/index.js'

const options = { ports: 'any' as const }

function wsRoute (instance: FastifyInstance, url: string): void {
  instance.get(url, { websocket: true }, (socket: WebSocket, request) => { socket.send(request.url) })
}

function firstMessage (ws: WebSocket): Promise<string> {
  return within(new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString()))), 2000, 'first message')
}

async function bootError (app: FastifyInstance): Promise<(Error & { code?: string }) | null> {
  try {
    await app.ready()
    return null
  } catch (err) {
    return err as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
}

t.test('a route in a sibling context of the plugin: FST_WS_PLUGIN_MISSING at boot', async (t) => {
  const app = Fastify()
  app.register(async (a) => {
    await a.register(websocket, options)
    wsRoute(a, '/served')
  })
  app.register(async (b) => { wsRoute(b, '/sibling') })
  const err = await bootError(app)
  t.equal(err?.code, 'FST_WS_PLUGIN_MISSING', 'refused with the catalogue code')
  t.match(err?.message, '/sibling', 'names the route')
  t.notMatch(err?.message, '/served', 'not the route the plugin serves')
})

t.test('a wsHandler route in a sibling context: FST_WS_PLUGIN_MISSING', async (t) => {
  const app = Fastify()
  app.register(async (a) => { await a.register(websocket, options) })
  app.register(async (b) => {
    b.route({ method: 'GET', url: '/both', handler: async () => 'http', wsHandler: (socket) => { socket.send('ws') } })
  })
  const err = await bootError(app)
  t.equal(err?.code, 'FST_WS_PLUGIN_MISSING')
  t.match(err?.message, '/both')
})

t.test('a route declared before the plugin: FST_WS_PLUGIN_MISSING', async (t) => {
  const app = Fastify()
  wsRoute(app, '/early')
  const err = await (async () => {
    try {
      await app.register(websocket, options)
      return await bootError(app)
    } catch (e) {
      await app.close().catch(() => {})
      return e as Error & { code?: string }
    }
  })()
  t.equal(err?.code, 'FST_WS_PLUGIN_MISSING')
  t.match(err?.message, '/early')
})

t.test('a child context created before the plugin was registered in its parent: FST_WS_PLUGIN_MISSING', async (t) => {
  const app = Fastify()
  app.register(async (parent) => {
    parent.register(async (child) => { wsRoute(child, '/older-child') })
    parent.register(websocket, options)
  })
  const err = await bootError(app)
  t.equal(err?.code, 'FST_WS_PLUGIN_MISSING')
  t.match(err?.message, '/older-child')
})

t.test('normal registrations boot and serve: plugin at the root, routes in children and grandchildren', async (t) => {
  const app = Fastify()
  await app.register(websocket, options)
  wsRoute(app, '/root')
  const plugin: FastifyPluginAsync = async (child) => {
    wsRoute(child, '/child')
    child.register(async (grandchild) => { wsRoute(grandchild, '/grandchild') }, { prefix: '/deep' })
  }
  app.register(plugin)
  await app.ready()
  t.teardown(() => app.close())
  for (const path of ['/root', '/child', '/deep/grandchild']) {
    const ws = await app.injectWS(path)
    t.equal(await firstMessage(ws), path, `${path} is served`)
    ws.terminate()
  }
})

t.test('an app that does not register this plugin is left alone (another plugin may serve `websocket: true`)', async (t) => {
  // Imported by a computed name: a static import would merge @fastify/websocket's route typings into this program.
  const upstreamName = '@fastify/websocket'
  const upstream = (await import(upstreamName) as { default: FastifyPluginAsync }).default
  const app = Fastify()
  await app.register(upstream)
  app.route({ method: 'GET', url: '/upstream', websocket: true, handler: () => {} } as never)
  app.get('/http', async () => 'plain')
  await t.resolves(async () => { await app.ready() }, 'boots')
  await app.close()
})
