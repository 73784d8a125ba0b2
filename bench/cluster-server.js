// One server process of the cluster benchmark / soak, driven over IPC by bench/cluster.js or
// scripts/soak-cluster.js. argv: mode (plugin-redis | plugin-memory | socketio), Redis URL (or '-'), path of the
// plugin's index.js (a snapshot of dist/lib). Listens on 127.0.0.1 (free port) and sends `{ ready, port }`.
//
// Subscribers: plugin: route /sub, `socket.subscribe('bench')`; socket.io: every connection joins room 'bench'.
// Publishing (`publish` command): payload `t=<µs, CLOCK_MONOTONIC>;i=<n>;xxx…` of `size` bytes, through
// `app.websocketServer.publish('bench', payload)` or `io.to('bench').emit('m', payload)`; at a fixed rate (open
// loop, each message at its due time) or, with rate 0, as fast as possible (`chunk` per event-loop turn).
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { exitWithParent, monoUs, serveRequests } from './cluster-common.js'

const [mode, redisUrl, pluginEntry] = process.argv.slice(2)
const TOPIC = 'bench'

let count = () => 0
let connections = () => 0
let publishOne = () => Promise.resolve()
let closeAll = async () => {}
let port = 0
const redisClients = []

function newRedis () {
  const r = new Redis(redisUrl, { maxRetriesPerRequest: 2, enableAutoPipelining: false })
  r.on('error', () => {})
  redisClients.push(r)
  return r
}

if (mode === 'plugin-redis' || mode === 'plugin-memory') {
  const lib = await import(pluginEntry)
  const app = Fastify({ logger: false })
  const topics = mode === 'plugin-redis' ? new lib.RedisTopics({ client: newRedis() }) : undefined
  await app.register(lib.default, { ports: 'any', origins: () => true, ...(topics ? { topics } : {}) })
  let live = 0
  let open = 0
  app.get('/sub', { websocket: true }, (socket) => {
    open++
    let counted = false
    socket.on('close', () => { open--; if (counted) live-- })
    socket.subscribe(TOPIC).then((r) => {
      if (r.status === 'live') { counted = true; live++ }
    })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  port = app.server.address().port
  count = () => live
  connections = () => open
  const wss = app.websocketServer
  publishOne = (payload) => wss.publish(TOPIC, payload)
  closeAll = async () => { await app.close() }
} else if (mode === 'socketio') {
  const http = await import('node:http')
  const { Server } = await import('socket.io')
  const { createAdapter } = await import('@socket.io/redis-adapter')
  const server = http.createServer()
  const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false })
  io.adapter(createAdapter(newRedis(), newRedis()))
  let open = 0
  io.on('connection', (s) => {
    open++
    s.join(TOPIC)
    s.on('disconnect', () => { open-- })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  port = server.address().port
  count = () => io.of('/').adapter.rooms.get(TOPIC)?.size ?? 0
  connections = () => open
  publishOne = (payload) => { io.to(TOPIC).emit('m', payload) }
  closeAll = async () => { await new Promise((resolve) => io.close(() => resolve())) }
} else {
  throw new Error(`unknown mode ${mode}`)
}

function payloadOf (i, size) {
  const head = `t=${Math.round(monoUs())};i=${i};`
  return head.length >= size ? head : head + 'x'.repeat(size - head.length)
}

async function publish ({ n, rate, size, chunk = 16 }) {
  let failed = 0
  const pending = []
  const onFail = () => { failed++ }
  const one = (i) => {
    const p = publishOne(payloadOf(i, size))
    if (p !== undefined) pending.push(p.catch(onFail))
  }
  const startUs = Math.round(monoUs())
  if (rate > 0) {
    const t0 = performance.now()
    await new Promise((resolve) => {
      let i = 0
      const tick = () => {
        const now = performance.now()
        while (i < n && t0 + i * 1000 / rate <= now) one(i++)
        if (i >= n) { resolve(); return }
        setTimeout(tick, Math.max(0, t0 + i * 1000 / rate - performance.now()))
      }
      tick()
    })
  } else {
    await new Promise((resolve) => {
      let i = 0
      const turn = () => {
        const end = Math.min(n, i + chunk)
        while (i < end) one(i++)
        if (i >= n) resolve()
        else setImmediate(turn)
      }
      turn()
    })
  }
  const sentUs = Math.round(monoUs())
  await Promise.all(pending)
  return { published: n - failed, failed, startUs, sentUs, confirmedUs: Math.round(monoUs()) }
}

function memory () {
  if (typeof globalThis.gc === 'function') { globalThis.gc(); globalThis.gc() }
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external }
}

async function shutdown () {
  const t0 = performance.now()
  const c0 = process.cpuUsage()
  await closeAll()
  const ms = performance.now() - t0
  const c = process.cpuUsage(c0)
  for (const r of redisClients) r.disconnect()
  return { ms, cpuSeconds: (c.user + c.system) / 1e6 }
}

serveRequests({
  count: () => ({ count: count(), connections: connections() }),
  publish,
  memory,
  // The orchestrator stops the process afterwards (an exit right after the reply could drop it unsent).
  close: shutdown
})
exitWithParent(60 * 60 * 1000, () => { for (const r of redisClients) r.disconnect() })
process.send({ ready: true, port, pid: process.pid })
