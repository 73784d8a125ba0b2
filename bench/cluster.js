// Cross-instance fan-out benchmark of issue 11 (cluster-wide topics on Redis), in one run:
//
//   1. cluster: 3 server processes × 1,000 subscribers of one topic, joined by one redis-server this script
//      starts; this plugin with RedisTopics against socket.io 4.8 with @socket.io/redis-adapter (io.to(room).emit);
//      a fixed total publish rate, then a burst published as fast as possible (max rate).
//   2. single: one server process, 1,000 subscribers: this plugin with the in-memory broker against RedisTopics.
//
// Every publish carries its send time (CLOCK_MONOTONIC, µs) in the payload; the load generators (raw WebSocket
// clients, bench/cluster-client.js) compute publish-to-delivery latency against the same clock. Server processes
// and redis-server are pinned to core 0, load generators to core 1 (taskset), the same for every system.
//
//   npm run build && node bench/cluster.js [--quick] [--rounds=N] [--latency] [--report-only]
//
// Writes bench/cluster-results.json, bench/cluster.svg and the "Cluster-wide topics (Redis)" section of
// bench/RESULTS.md (between markers; the rest of the file is left alone). --quick writes to bench/.tmp/ only.
import { cpus, totalmem } from 'node:os'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  ROOT, startRedis, startChild, snapshotPlugin, cpuSeconds, machineBusySeconds, histMerge, histPercentiles, sleep, fmtNum, redisRaw, waitQuiet
} from './cluster-common.js'
import { writeClusterSvg, writeClusterSection } from './cluster-report.js'

const argv = process.argv.slice(2)
const flag = (name) => argv.includes(`--${name}`)
const opt = (name, def) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`))
  return a === undefined ? def : a.slice(name.length + 3)
}
const QUICK = flag('quick')
// --latency: only the fixed-rate phase of the 3-instance comparison, more rounds (latency is what a busy machine
// disturbs most); written to cluster-latency-results.json, reported next to the main results.
const LATENCY = flag('latency')
const RESULTS_FILE = LATENCY ? 'cluster-latency-results.json' : 'cluster-results.json'
const CFG = {
  instances: Number(opt('instances', 3)),
  subscribers: Number(opt('subscribers', QUICK ? 200 : 1000)),
  size: Number(opt('size', 100)),
  rate: Number(opt('rate', 20)),
  rateSeconds: Number(opt('rate-seconds', QUICK ? 2 : 5)),
  burst: Number(opt('burst', QUICK ? 150 : 600)),
  rounds: Number(opt('rounds', QUICK ? 1 : LATENCY ? 6 : 3)),
  chunk: 16
}
const OUT = QUICK ? join(ROOT, 'bench', '.tmp') : join(ROOT, 'bench')
const SERVER = join(ROOT, 'bench', 'cluster-server.js')
const CLIENT = join(ROOT, 'bench', 'cluster-client.js')
const log = (s) => process.stderr.write(s + '\n')

/** Start `instances` servers (core 0) and one load generator per server (core 1) with `subscribers` each. */
async function startSystem (mode, redis, plugin, instances) {
  const servers = []
  const clients = []
  try {
    for (let i = 0; i < instances; i++) {
      const s = startChild(SERVER, { args: [mode, redis ? redis.url : '-', plugin.entry], cpu: 0, execArgv: ['--expose-gc'], name: `${mode}#${i}` })
      servers.push(s)
      const c = startChild(CLIENT, { cpu: 1, name: `loadgen#${i}` })
      clients.push(c)
    }
    const ready = await Promise.all(servers.map((s) => s.waitFor((m) => m.ready === true, 20_000)))
    await Promise.all(clients.map((c) => c.waitFor((m) => m.ready === true, 20_000)))
    servers.forEach((s, i) => { s.port = ready[i].port })
    const kind = mode === 'socketio' ? 'socketio' : 'plugin'
    const res = await Promise.all(clients.map((c, i) => c.request({ cmd: 'connect', targets: [{ port: servers[i].port, count: CFG.subscribers }], kind, concurrency: 50 }, 120_000)))
    for (const r of res) if (r.failed > 0) throw new Error(`${mode}: ${r.failed} connections failed: ${JSON.stringify(r.errors)}`)
    // Every subscription live on every server.
    const deadline = Date.now() + 30_000
    for (;;) {
      const counts = await Promise.all(servers.map((s) => s.request({ cmd: 'count' })))
      if (counts.every((c) => c.count === CFG.subscribers)) break
      if (Date.now() > deadline) throw new Error(`${mode}: subscriptions not live: ${JSON.stringify(counts)}`)
      await sleep(50)
    }
    return { servers, clients, async stop () { await Promise.all([...servers, ...clients].map((p) => p.stop())) } }
  } catch (err) {
    await Promise.all([...servers, ...clients].map((p) => p.stop()))
    throw err
  }
}

/**
 * One phase: every server publishes its share (`n` in total, at `rate` per second in total, or as fast as
 * possible when rate is 0); then wait until every subscriber got every message (or 30 s more passed).
 */
async function phase (sys, redisPid, { n, rate }) {
  const { servers, clients } = sys
  const quietBefore = await waitQuiet({ maxMs: QUICK ? 2000 : 20_000, ownPids: [...servers, ...clients].map((p) => p.pid).concat(redisPid ? [redisPid] : []) })
  await Promise.all(clients.map((c) => c.request({ cmd: 'reset' })))
  const expected = n * CFG.subscribers * servers.length
  const pids = { servers: servers.map((s) => s.pid), clients: clients.map((c) => c.pid), redis: redisPid ? [redisPid] : [] }
  const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, v]) => [k, v.reduce((a, p) => a + cpuSeconds(p), 0)]))
  const busy0 = machineBusySeconds()
  const shares = servers.map((_, i) => Math.floor(n / servers.length) + (i < n % servers.length ? 1 : 0))
  const pub = await Promise.all(servers.map((s, i) => s.request({ cmd: 'publish', n: shares[i], rate: rate / servers.length, size: CFG.size, chunk: CFG.chunk }, 120_000)))
  let st
  const deadline = Date.now() + 30_000
  for (;;) {
    st = await Promise.all(clients.map((c) => c.request({ cmd: 'stats' })))
    const got = st.reduce((a, s) => a + s.deliveries, 0)
    if (got >= expected || Date.now() > deadline) break
    await sleep(rate > 0 ? 100 : 20)
  }
  const cpu = Object.fromEntries(Object.entries(pids).map(([k, v]) => [k, v.reduce((a, p) => a + cpuSeconds(p), 0) - cpu0[k]]))
  const busy = machineBusySeconds() - busy0
  const delivered = st.reduce((a, s) => a + s.deliveries, 0)
  // From the first publish (the requests' IPC trip is not part of it) to the last delivery.
  const startUs = Math.min(...pub.map((p) => p.startUs))
  const lastUs = Math.max(...st.map((s) => s.lastUs))
  const seconds = (lastUs - startUs) / 1e6
  const lat = histPercentiles(histMerge(st.map((s) => s.hist)))
  const own = Object.values(cpu).reduce((a, b) => a + b, 0)
  return {
    published: pub.reduce((a, p) => a + p.published, 0),
    failed: pub.reduce((a, p) => a + p.failed, 0),
    expected,
    delivered,
    perSocketMin: Math.min(...st.map((s) => s.perSocketMin)),
    perSocketMax: Math.max(...st.map((s) => s.perSocketMax)),
    seconds,
    deliveriesPerSec: delivered / seconds,
    publishSeconds: (Math.max(...pub.map((p) => p.sentUs)) - startUs) / 1e6,
    p50: lat.p50,
    p99: lat.p99,
    p999: lat['p99.9'],
    serverCpuUsPerDelivery: (cpu.servers + cpu.redis) * 1e6 / delivered,
    clientCpuUsPerDelivery: cpu.clients * 1e6 / delivered,
    cpuSeconds: cpu,
    otherCoresBefore: quietBefore,
    otherCpuSeconds: Math.max(0, busy - own)
  }
}

async function measure (mode, redis, plugin, instances, phases) {
  log(`  ${mode} × ${instances}: starting`)
  const sys = await startSystem(mode, mode === 'plugin-memory' ? null : redis, plugin, instances)
  const out = {}
  try {
    await phase(sys, redis?.pid, { n: 10 * instances, rate: 0 }) // warm-up
    for (const [name, p] of Object.entries(phases)) {
      out[name] = await phase(sys, mode === 'plugin-memory' ? null : redis?.pid, p)
      const r = out[name]
      log(`  ${mode} ${name}: ${fmtNum(r.deliveriesPerSec)} deliveries/s, p50 ${fmtNum(r.p50)} µs, p99 ${fmtNum(r.p99)} µs, ` +
        `${r.delivered}/${r.expected} delivered, per socket ${r.perSocketMin}–${r.perSocketMax}, cpu ${JSON.stringify(Object.fromEntries(Object.entries(r.cpuSeconds).map(([k, v]) => [k, +v.toFixed(2)])))} other ${r.otherCpuSeconds.toFixed(2)} s during, ${r.otherCoresBefore.toFixed(2)} cores before`)
    }
  } finally {
    await sys.stop()
  }
  return out
}

function median (xs) {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function summarize (runs) {
  // runs: { system: [ { phase: result } per round ] } → { system: { phase: { metric: median } } }
  const out = {}
  for (const [sys, rounds] of Object.entries(runs)) {
    out[sys] = {}
    for (const ph of Object.keys(rounds[0] ?? {})) {
      const pick = (k) => median(rounds.map((r) => r[ph]?.[k]))
      out[sys][ph] = {
        deliveriesPerSec: pick('deliveriesPerSec'),
        p50: pick('p50'),
        p99: pick('p99'),
        p999: pick('p999'),
        serverCpuUsPerDelivery: pick('serverCpuUsPerDelivery'),
        clientCpuUsPerDelivery: pick('clientCpuUsPerDelivery'),
        otherCores: median(rounds.map((r) => r[ph] ? r[ph].otherCpuSeconds / Math.max(r[ph].seconds, 1e-3) : NaN)),
        min: Math.min(...rounds.map((r) => r[ph]?.deliveriesPerSec)),
        max: Math.max(...rounds.map((r) => r[ph]?.deliveriesPerSec)),
        complete: rounds.every((r) => r[ph] && r[ph].delivered === r[ph].expected && r[ph].perSocketMin === r[ph].perSocketMax)
      }
    }
  }
  return out
}

async function main () {
  if (flag('report-only')) {
    const results = JSON.parse(readFileSync(join(OUT, RESULTS_FILE), 'utf8'))
    // Recompute the summary from the runs (older files lack the per-delivery CPU columns).
    for (const runs of Object.values(results.runs)) {
      for (const rounds of Object.values(runs)) {
        for (const r of rounds) {
          for (const v of Object.values(r)) {
            v.serverCpuUsPerDelivery ??= (v.cpuSeconds.servers + v.cpuSeconds.redis) * 1e6 / v.delivered
            v.clientCpuUsPerDelivery ??= v.cpuSeconds.clients * 1e6 / v.delivered
          }
        }
      }
    }
    results.summary = { cluster: summarize(results.runs.cluster), single: LATENCY ? {} : summarize(results.runs.single) }
    writeFileSync(join(OUT, RESULTS_FILE), JSON.stringify(results, null, 2) + '\n')
    report(results)
    return
  }
  const plugin = snapshotPlugin()
  const redis = await startRedis({ cpu: 0 })
  const started = Date.now()
  log(`cluster bench: redis-server ${redis.version} on 127.0.0.1:${redis.port}, plugin build ${plugin.sha1}, ${JSON.stringify(CFG)}`)
  const clusterRuns = { 'plugin-redis': [], socketio: [] }
  const singleRuns = { 'plugin-memory': [], 'plugin-redis': [] }
  const clusterPhases = LATENCY
    ? { rate: { n: CFG.rate * CFG.rateSeconds, rate: CFG.rate } }
    : { rate: { n: CFG.rate * CFG.rateSeconds, rate: CFG.rate }, max: { n: CFG.burst, rate: 0 } }
  const singlePhases = {
    rate: { n: CFG.rate * CFG.rateSeconds, rate: CFG.rate },
    max: { n: CFG.burst, rate: 0 }
  }
  try {
    for (let round = 0; round < CFG.rounds; round++) {
      log(`round ${round + 1}/${CFG.rounds}`)
      const clusterOrder = round % 2 === 0 ? ['plugin-redis', 'socketio'] : ['socketio', 'plugin-redis']
      for (const mode of clusterOrder) {
        await redisRaw(redis.port, ['FLUSHALL'])
        clusterRuns[mode].push(await measure(mode, redis, plugin, CFG.instances, clusterPhases))
      }
      if (LATENCY) continue
      const singleOrder = round % 2 === 0 ? ['plugin-memory', 'plugin-redis'] : ['plugin-redis', 'plugin-memory']
      for (const mode of singleOrder) {
        await redisRaw(redis.port, ['FLUSHALL'])
        singleRuns[mode].push(await measure(mode, redis, plugin, 1, singlePhases))
      }
    }
  } finally {
    await redis.stop()
    plugin.remove()
  }
  const pkg = (name) => JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version
  const results = {
    date: new Date().toISOString(),
    elapsedSeconds: Math.round((Date.now() - started) / 1000),
    mode: QUICK ? 'quick' : 'full',
    config: CFG,
    machine: {
      cpu: cpus()[0]?.model ?? '?',
      cores: cpus().length,
      memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
      node: process.version,
      redis: redis.version,
      versions: { 'socket.io': pkg('socket.io'), '@socket.io/redis-adapter': pkg('@socket.io/redis-adapter'), ioredis: pkg('ioredis'), fastify: pkg('fastify') },
      pluginBuild: { sha1: plugin.sha1, builtAt: plugin.builtAt },
      pinning: 'servers and redis-server on core 0, load generators on core 1 (taskset)'
    },
    runs: { cluster: clusterRuns, single: singleRuns },
    summary: { cluster: summarize(clusterRuns), single: LATENCY ? {} : summarize(singleRuns) }
  }
  mkdirSync(OUT, { recursive: true })
  writeFileSync(join(OUT, RESULTS_FILE), JSON.stringify(results, null, 2) + '\n')
  report(results)
}

function report (results) {
  const s = results.summary
  const c = s.cluster
  const ratio = (a, b) => a / b
  const md = join(OUT, QUICK ? 'CLUSTER.md' : 'RESULTS.md')
  if (LATENCY) {
    process.stdout.write(`p50/p99 at ${results.config.rate}/s: plugin ${fmtNum(c['plugin-redis'].rate.p50)}/${fmtNum(c['plugin-redis'].rate.p99)} µs, ` +
      `socket.io ${fmtNum(c.socketio.rate.p50)}/${fmtNum(c.socketio.rate.p99)} µs\n`)
    writeClusterSection(results, md)
    log(`wrote ${join(OUT, RESULTS_FILE)}, section of ${md}`)
    return
  }
  const lines = [
    '',
    `cluster (3 × ${results.config.subscribers}): plugin-redis ÷ socket.io deliveries/s at max rate: ${ratio(c['plugin-redis'].max.deliveriesPerSec, c.socketio.max.deliveriesPerSec).toFixed(2)}x (goal ≥ 3)`,
    `  p99 at ${results.config.rate}/s: plugin ${fmtNum(c['plugin-redis'].rate.p99)} µs, socket.io ${fmtNum(c.socketio.rate.p99)} µs`,
    `single instance: redis ÷ memory deliveries/s at max rate: ${ratio(s.single['plugin-redis'].max.deliveriesPerSec, s.single['plugin-memory'].max.deliveriesPerSec).toFixed(2)}`
  ]
  process.stdout.write(lines.join('\n') + '\n')
  writeClusterSvg(results, join(OUT, 'cluster.svg'))
  writeClusterSection(results, md)
  log(`wrote ${join(OUT, RESULTS_FILE)}, cluster.svg, section of ${md}`)
}

await main()
process.exit(0)
