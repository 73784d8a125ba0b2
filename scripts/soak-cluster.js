// Scale soak of issue 11: several server processes joined by the Redis broker hold many open WebSockets (100,000
// by default), all subscribed to one topic; then one instance publishes to all of them, then every server closes.
//
// A process here may hold at most `ulimit -n` (20,000) files, so the connections are spread over `--servers`
// server processes (one port each) and `--clients` load-generator processes (bench/cluster-client.js: raw
// WebSocket clients, each connected to every server port in turn). Connections to 127.0.0.1 are distinguished by
// their 4-tuple, so one source port can serve one connection per server port: with P server ports, up to
// P × (ephemeral range) connections fit; `--sources=4` also binds clients to 127.0.0.2… (bind-before-connect,
// which reserves a source port per address instead).
//
//   npm run build && node scripts/soak-cluster.js [--target=100000] [--steps=1000,10000,100000] [--servers=8]
//     [--clients=8] [--messages=5] [--sources=1] [--quick]
//
// Prints a summary and writes bench/soak-cluster-results.json, bench/cluster-soak.svg and the soak part of the
// "Cluster-wide topics (Redis)" section of bench/RESULTS.md (--quick: bench/.tmp/ only). Everything it starts
// (redis-server, servers, load generators) stops at the end or when it exits.
import { cpus, totalmem } from 'node:os'
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  ROOT, startRedis, startChild, snapshotPlugin, histMerge, histPercentiles, sleep, fmtNum, monoUs, cpuSeconds, machineBusySeconds, redisRaw
} from '../bench/cluster-common.js'
import { writeSoakSvg, writeClusterSection } from '../bench/cluster-report.js'

const argv = process.argv.slice(2)
const opt = (name, def) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`))
  return a === undefined ? def : a.slice(name.length + 3)
}
const QUICK = argv.includes('--quick')
const target = Number(opt('target', QUICK ? 10_000 : 100_000))
const CFG = {
  target,
  steps: opt('steps', QUICK ? '1000,10000' : '1000,10000,100000').split(',').map(Number).filter((n) => n <= target),
  servers: Number(opt('servers', 8)),
  clients: Number(opt('clients', 8)),
  messages: Number(opt('messages', 5)),
  size: 100,
  sources: Number(opt('sources', 1)),
  concurrency: Number(opt('concurrency', 64))
}
const OUT = QUICK ? join(ROOT, 'bench', '.tmp') : join(ROOT, 'bench')
const SERVER = join(ROOT, 'bench', 'cluster-server.js')
const CLIENT = join(ROOT, 'bench', 'cluster-client.js')
const log = (s) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`)

function shell (cmd) {
  try { return execFileSync('bash', ['-c', cmd], { encoding: 'utf8' }).trim() } catch { return '?' }
}

async function memoryOf (procs) {
  const m = await Promise.all(procs.map((p) => p.request({ cmd: 'memory' }, 60_000)))
  return { rss: m.reduce((a, x) => a + x.rss, 0), heap: m.reduce((a, x) => a + x.heapUsed, 0), each: m.map((x) => x.rss) }
}

async function counts (servers) {
  const c = await Promise.all(servers.map((s) => s.request({ cmd: 'count' })))
  return { live: c.reduce((a, x) => a + x.count, 0), open: c.reduce((a, x) => a + x.connections, 0), each: c.map((x) => x.count) }
}

/** CPU seconds used so far by the servers, the load generators, redis-server and the whole machine. */
function cpuNow (servers, clients, redisPid) {
  const sum = (ps) => ps.reduce((a, p) => a + (cpuSeconds(p.pid) || 0), 0)
  return { servers: sum(servers), clients: sum(clients), redis: cpuSeconds(redisPid) || 0, machine: machineBusySeconds() }
}

function cpuSince (a, b) {
  const d = Object.fromEntries(Object.keys(a).map((k) => [k, +(b[k] - a[k]).toFixed(2)]))
  d.other = +Math.max(0, d.machine - d.servers - d.clients - d.redis).toFixed(2)
  delete d.machine
  return d
}

/** Redis's per-command counters (INFO commandstats): { command: { calls, usec } }. */
async function redisStats (port) {
  const out = {}
  const text = await redisRaw(port, ['INFO', 'commandstats']).catch(() => '')
  for (const m of text.matchAll(/cmdstat_([^:]+):calls=(\d+),usec=(\d+)/g)) out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) }
  return out
}

/** What Redis did between two redisStats(): only the commands that ran, busiest first. */
function redisDelta (a, b) {
  const d = []
  for (const [k, v] of Object.entries(b)) {
    const calls = v.calls - (a[k]?.calls ?? 0)
    if (calls > 0) d.push({ command: k, calls, usec: v.usec - (a[k]?.usec ?? 0) })
  }
  return d.sort((x, y) => y.usec - x.usec)
}

async function main () {
  const started = Date.now()
  const plugin = snapshotPlugin()
  const redis = await startRedis()
  const machine = {
    cpu: cpus()[0]?.model ?? '?',
    cores: cpus().length,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    redis: redis.version,
    pluginBuild: { sha1: plugin.sha1, builtAt: plugin.builtAt },
    nofile: shell('ulimit -n'),
    nofileHard: shell('ulimit -Hn'),
    portRange: readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().replace(/\s+/, '–'),
    somaxconn: readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim()
  }
  log(`soak: redis-server ${redis.version} on ${redis.port}, plugin ${plugin.sha1}, ${JSON.stringify(CFG)}, nofile ${machine.nofile}, ports ${machine.portRange}`)
  const servers = []
  const clients = []
  const result = { date: new Date().toISOString(), config: CFG, machine, steps: [], publish: null, close: null, limits: null }
  try {
    for (let i = 0; i < CFG.servers; i++) servers.push(startChild(SERVER, { args: ['plugin-redis', redis.url, plugin.entry], execArgv: ['--expose-gc'], name: `server#${i}` }))
    for (let i = 0; i < CFG.clients; i++) clients.push(startChild(CLIENT, { name: `loadgen#${i}` }))
    const ready = await Promise.all(servers.map((s) => s.waitFor((m) => m.ready === true, 30_000)))
    await Promise.all(clients.map((c) => c.waitFor((m) => m.ready === true, 30_000)))
    const ports = ready.map((r) => r.port)
    await sleep(1000)
    const base = await memoryOf(servers)
    log(`baseline: ${CFG.servers} servers ${(base.rss / 2 ** 20).toFixed(1)} MiB RSS, heap ${(base.heap / 2 ** 20).toFixed(1)} MiB`)
    const sources = Array.from({ length: CFG.sources }, (_, i) => `127.0.0.${i + 1}`)
    let have = 0
    for (const step of CFG.steps) {
      const add = step - have
      // Spread `add` over the clients, and each client's share over every server port.
      const t0 = performance.now()
      const cpu0 = cpuNow(servers, clients, redis.pid)
      const rs0 = await redisStats(redis.port)
      const perClient = clients.map((_, i) => Math.floor(add / clients.length) + (i < add % clients.length ? 1 : 0))
      const res = await Promise.all(clients.map((c, i) => {
        const n = perClient[i]
        const targets = ports.map((port, j) => ({ port, count: Math.floor(n / ports.length) + (((j + i) % ports.length) < n % ports.length ? 1 : 0) }))
        return c.request({ cmd: 'connect', targets, kind: 'plugin', concurrency: CFG.concurrency, localAddresses: CFG.sources > 1 ? sources : [] }, 600_000)
      }))
      const connectMs = performance.now() - t0
      const connectCpu = cpuSince(cpu0, cpuNow(servers, clients, redis.pid))
      const failed = res.reduce((a, r) => a + r.failed, 0)
      const errors = {}
      for (const r of res) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v
      // Wait for every subscription to be live.
      let c
      const deadline = Date.now() + 60_000
      for (;;) {
        c = await counts(servers)
        if (c.live >= step - failed || Date.now() > deadline) break
        await sleep(200)
      }
      have = c.live
      await sleep(1000)
      // Redis's work for this step's subscriptions (and the presence refresh, once per topic per instance per 5 s).
      const connectRedis = redisDelta(rs0, await redisStats(redis.port))
      const mem = await memoryOf(servers)
      const clientMem = await Promise.all(clients.map((x) => x.request({ cmd: 'memory' })))
      const st = {
        step,
        connections: c.live,
        open: c.open,
        failed,
        errors,
        connectMs,
        connectCpu,
        connectRedis,
        rssDelta: mem.rss - base.rss,
        rssPerConnection: (mem.rss - base.rss) / c.live,
        heapPerConnection: (mem.heap - base.heap) / c.live,
        serverRss: mem.each,
        perServer: c.each,
        clientRss: clientMem.reduce((a, x) => a + x.rss, 0)
      }
      const prev = result.steps[result.steps.length - 1]
      st.marginalRssPerConnection = (st.rssDelta - (prev?.rssDelta ?? 0)) / (st.connections - (prev?.connections ?? 0))
      st.marginalHeapPerConnection = ((mem.heap - base.heap) - (prev?.heapDelta ?? 0)) / (st.connections - (prev?.connections ?? 0))
      st.heapDelta = mem.heap - base.heap
      result.steps.push(st)
      log(`${fmtNum(c.live)} live subscribers (${fmtNum(c.open)} open, ${failed} failed ${JSON.stringify(errors)}), connect ${(connectMs / 1000).toFixed(1)} s, ` +
        `server RSS +${(st.rssDelta / 2 ** 20).toFixed(1)} MiB = ${(st.rssPerConnection / 1024).toFixed(2)} KiB/conn, heap ${(st.heapPerConnection / 1024).toFixed(2)} KiB/conn, clients ${(st.clientRss / 2 ** 20).toFixed(0)} MiB, cpu ${JSON.stringify(connectCpu)}, redis ${JSON.stringify(connectRedis)}`)
      if (failed > 0) {
        result.limits = `Stopped at ${fmtNum(c.live)} of the ${fmtNum(step)} asked for: ${failed} connections failed (${JSON.stringify(errors)}).`
        break
      }
    }

    // Publish to all of them from one instance.
    const subscribers = have
    // Warm-up: one message to everybody (JIT, first writes), not measured.
    await servers[0].request({ cmd: 'publish', n: 1, rate: 0, size: CFG.size, chunk: 1 }, 60_000)
    for (let i = 0; i < 300; i++) {
      const s = await Promise.all(clients.map((x) => x.request({ cmd: 'stats' }, 60_000)))
      if (s.reduce((a, x) => a + x.deliveries, 0) >= subscribers) break
      await sleep(100)
    }
    await Promise.all(clients.map((x) => x.request({ cmd: 'reset' })))
    const expected = subscribers * CFG.messages
    const pcpu0 = cpuNow(servers, clients, redis.pid)
    const prs0 = await redisStats(redis.port)
    const pub = await servers[0].request({ cmd: 'publish', n: CFG.messages, rate: 0, size: CFG.size, chunk: 1 }, 120_000)
    let stats
    const deadline = Date.now() + 120_000
    for (;;) {
      stats = await Promise.all(clients.map((x) => x.request({ cmd: 'stats' }, 60_000)))
      if (stats.reduce((a, s) => a + s.deliveries, 0) >= expected || Date.now() > deadline) break
      await sleep(100)
    }
    const publishCpu = cpuSince(pcpu0, cpuNow(servers, clients, redis.pid))
    const publishRedis = redisDelta(prs0, await redisStats(redis.port))
    const delivered = stats.reduce((a, s) => a + s.deliveries, 0)
    const lastUs = Math.max(...stats.map((s) => s.lastUs))
    const lat = histPercentiles(histMerge(stats.map((s) => s.hist)))
    // From the first publish (the request's IPC trip is not part of it) to the last delivery.
    const seconds = (lastUs - pub.startUs) / 1e6
    result.publish = {
      subscribers, messages: CFG.messages, rateText: 'a burst, one message per event-loop turn', expected, delivered,
      perSocketMin: Math.min(...stats.map((s) => s.perSocketMin)),
      perSocketMax: Math.max(...stats.map((s) => s.perSocketMax)),
      seconds, deliveriesPerSec: delivered / seconds, p50: lat.p50, p99: lat.p99, failed: pub.failed, cpuSeconds: publishCpu, redis: publishRedis
    }
    log(`publish ${CFG.messages} × ${fmtNum(subscribers)}: ${delivered}/${expected} delivered in ${seconds.toFixed(2)} s = ${fmtNum(delivered / seconds)} deliveries/s, ` +
      `p50 ${fmtNum(lat.p50)} µs p99 ${fmtNum(lat.p99)} µs, per socket ${result.publish.perSocketMin}–${result.publish.perSocketMax}, cpu ${JSON.stringify(publishCpu)}`)

    // Close everything: every server's app.close() at once; the clients answer the Close frames.
    const ccpu0 = cpuNow(servers, clients, redis.pid)
    const crs0 = await redisStats(redis.port)
    const c0 = monoUs()
    const closed = Promise.all(clients.map((x) => x.request({ cmd: 'waitClosed', ms: 120_000 }, 130_000)))
    const closes = await Promise.all(servers.map((s) => s.request({ cmd: 'close' }, 130_000)))
    const w = await closed
    const closeRedis = redisDelta(crs0, await redisStats(redis.port))
    // The servers exit right after their close: they report their own CPU time of it.
    const closeCpu = cpuSince({ ...ccpu0, servers: 0 }, { ...cpuNow([], clients, redis.pid), servers: closes.reduce((a, x) => a + x.cpuSeconds, 0) })
    result.close = {
      ms: Math.max(...closes.map((x) => x.ms)),
      perServerMs: closes.map((x) => Math.round(x.ms)),
      allClosedMs: (Math.max(...w.map((x) => x.lastCloseUs)) - c0) / 1000,
      leftOpen: w.reduce((a, x) => a + x.open, 0),
      cpuSeconds: closeCpu,
      redis: closeRedis
    }
    log(`close: slowest app.close() ${(result.close.ms / 1000).toFixed(2)} s, all client sockets closed after ${(result.close.allClosedMs / 1000).toFixed(2)} s, ${result.close.leftOpen} left open, cpu ${JSON.stringify(closeCpu)}, redis ${JSON.stringify(closeRedis)}`)
  } finally {
    await Promise.all([...servers, ...clients].map((p) => p.stop()))
    await redis.stop()
    plugin.remove()
  }
  result.elapsedSeconds = Math.round((Date.now() - started) / 1000)
  mkdirSync(OUT, { recursive: true })
  writeFileSync(join(OUT, 'soak-cluster-results.json'), JSON.stringify(result, null, 2) + '\n')
  writeSoakSvg(result, join(OUT, 'cluster-soak.svg'))
  writeClusterSection(null, join(OUT, QUICK ? 'CLUSTER.md' : 'RESULTS.md'))
  log(`wrote ${join(OUT, 'soak-cluster-results.json')}, cluster-soak.svg, section of ${QUICK ? 'CLUSTER.md' : 'RESULTS.md'}`)
}

await main()
process.exit(0)
