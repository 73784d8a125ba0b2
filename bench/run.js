// Benchmark orchestrator.
//
//   node bench/run.js                 full run (3 rounds, ~10 minutes)
//   node bench/run.js --quick         smoke run (1 round, short phases, ~1 minute)
//   node bench/run.js --only=echo32,latency --servers=plugin,fastify-websocket --rounds=5
//   node bench/run.js --report-only   rebuild RESULTS.md and ratios.svg from results.json
// Other flags:
//   --no-pin          do not pin with taskset (default: server on core 0, load generator on core 1)
//   --max-wait=S      wait up to S seconds (default 30; 5 with --quick) for other CPU load to stop before each
//                     measurement; runs that still start on a busy machine are flagged
//   --retries=N       repeat a measurement disturbed by other processes up to N times
//                     (default 2 in full mode, 0 in --quick); --budget=MIN stops waiting and
//                     retrying after MIN minutes (default 30 full, 3 quick)
//   --profile[=DIR]   run servers with --cpu-prof into DIR (default /tmp/bench-profiles);
//                     summarise with `node bench/profile-summary.js FILE.cpuprofile`
//   --out=DIR         where results go (default bench/ for full runs, bench/.tmp/ (git-ignored)
//                     for --quick so a smoke run never overwrites the full results)
//   --no-merge        with --only, write only the scenarios just run; by default they replace their own
//                     entries in DIR/results.json (same mode only) and the other scenarios are kept
//
// Each (scenario, round, server) runs in a fresh server process pinned to core 0 and a fresh
// load-generator process pinned to core 1; servers alternate within a round and the order
// rotates from round to round. Writes results.json, RESULTS.md and ratios.svg.
// A scenario may name its own servers (`json`: the plugin with and without route message schemas and
// @fastify/websocket with ajv by hand) and the path each one is driven on.
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { cpus, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')

// ---------------------------------------------------------------------------------------------
// Configuration

const SERVERS = {
  plugin: { script: 'servers/plugin.js', label: 'fastify-rfc6455 (this plugin)' },
  'fastify-websocket': { script: 'servers/fastify-websocket.js', label: '@fastify/websocket 11 (ws)' },
  ws: { script: 'servers/ws.js', label: 'ws 8 (bare WebSocketServer)' },
  'raw-tcp': { script: 'servers/raw-tcp.js', label: 'raw TCP echo (ceiling)' },
  // Runs only in the scenarios that name it (its path is given by the scenario).
  'plugin-unvalidated': { script: 'servers/plugin.js', label: 'fastify-rfc6455, JSON.parse + JSON.stringify by hand, no schema', only: true }
}
const PEERS = ['plugin-unvalidated', 'fastify-websocket', 'ws', 'raw-tcp']
/** Servers loading dist/lib (skipped with a warning when it is not built). */
const PLUGIN_SERVERS = ['plugin', 'plugin-unvalidated']

/**
 * value: the headline metric of a loadgen result; better: which direction wins.
 * params: full / quick loadgen parameters (seconds for warmup/duration).
 */
const SCENARIOS = {
  echo32: {
    title: '32-byte text echo throughput',
    unit: 'msg/s',
    better: 'higher',
    describe: (p) => `${p.conns} connections x ${p.window} messages in flight, ${p.duration}s measured after ${p.warmup}s warm-up`,
    full: { conns: 50, window: 64, warmup: 1.5, duration: 4 },
    quick: { conns: 20, window: 32, warmup: 0.5, duration: 1 }
  },
  echo64k: {
    title: '64 KiB binary echo throughput',
    unit: 'MB/s',
    better: 'higher',
    describe: (p) => `${p.conns} connections x ${p.window} messages in flight; MB = 10^6 bytes of echoed payload`,
    full: { conns: 10, window: 8, warmup: 1.5, duration: 4 },
    quick: { conns: 8, window: 4, warmup: 0.5, duration: 1 }
  },
  latency: {
    title: 'Round-trip latency p99 at fixed rate',
    unit: 'µs',
    better: 'lower',
    extra: ['p50', 'p99', 'p999'],
    describe: (p) => `${p.rate} msg/s total over ${p.conns} connections (32-byte text), time from write to echo end`,
    full: { conns: 10, rate: 2000, warmup: 1.5, duration: 4 },
    quick: { conns: 10, rate: 2000, warmup: 0.5, duration: 1 }
  },
  handshakes: {
    title: 'Handshakes per second (open, upgrade, close)',
    unit: 'conn/s',
    better: 'higher',
    describe: (p) => `${p.concurrency} concurrent clients, each: connect, upgrade, Close frame, wait for TCP close`,
    full: { concurrency: 16, warmup: 1, duration: 4 },
    quick: { concurrency: 8, warmup: 0.5, duration: 1 }
  },
  rss: {
    title: 'Server RSS per idle connection',
    unit: 'bytes',
    better: 'lower',
    extra: ['heapPerConn'],
    describe: (p) => `RSS (after GC) with ${p.count} idle connections minus RSS before, / ${p.count}`,
    full: { count: 5000, settle: 1, timeout: 90 },
    quick: { count: 1000, settle: 0.5 }
  },
  deflate: {
    title: 'permessage-deflate echo throughput (4 KiB compressible text)',
    unit: 'msg/s',
    better: 'higher',
    serverFlags: ['--deflate'],
    describe: (p) => `${p.conns} connections x ${p.window} in flight; client sends uncompressed, server must compress the echo (no context takeover)`,
    full: { conns: 20, window: 16, size: 4096, warmup: 1.5, duration: 4 },
    quick: { conns: 10, window: 8, size: 4096, warmup: 0.5, duration: 1 }
  },
  fanout: {
    title: 'Topic fan-out deliveries per second',
    unit: 'deliveries/s',
    better: 'higher',
    describe: (p) => `1 publisher, ${p.subs} subscribers, ${p.window} published messages in flight (56-byte text)`,
    full: { subs: 1000, window: 8, warmup: 1, duration: 4, timeout: 90 },
    quick: { subs: 300, window: 8, warmup: 0.5, duration: 1 }
  },
  json: {
    title: 'Validated JSON echo (56-byte message in, 44-byte reply out)',
    unit: 'msg/s',
    better: 'higher',
    // invalidClose: close code answering a message that breaks the schema ('–' = the server replied to it).
    extra: ['invalidClose'],
    // plugin: route `messages: { receive, send }` + socket.sendMessage(); plugin-unvalidated: JSON.parse +
    // JSON.stringify by hand; fastify-websocket: JSON.parse + ajv (compiled from the same schema) + JSON.stringify.
    servers: { plugin: '/json', 'plugin-unvalidated': '/json-unvalidated', 'fastify-websocket': '/json' },
    describe: (p) => `${p.conns} connections x ${p.window} messages in flight, ${p.duration}s measured after ${p.warmup}s warm-up; ` +
      '{"type":"say","room":"lobby","text":"hello world","n":123} answered by {"type":"said","text":"hello world","n":123}, ' +
      'one JSON Schema for both (bench/servers/json-messages.js). plugin: route `messages: { receive, send }` (the instance\'s ajv, ' +
      'fast-json-stringify) and `socket.sendMessage()`; plugin-unvalidated: the same plugin, `JSON.parse` + `JSON.stringify` by hand, ' +
      'no validation; fastify-websocket: `JSON.parse` + an ajv 8 validator compiled from the same schema with Fastify\'s ajv options + `JSON.stringify`',
    full: { conns: 50, window: 64, warmup: 1.5, duration: 4 },
    quick: { conns: 20, window: 32, warmup: 0.5, duration: 1 }
  }
}

/** Performance bars: plugin / peer ratio against a threshold, grouped by the issue that set them. */
const ISSUES = { 5: 'Issue 5 targets', 12: 'Issue 12 targets (typed messages)' }
const TARGETS = [
  { issue: 5, scenario: 'echo32', peer: 'fastify-websocket', op: '>=', ratio: 2, text: 'small-message echo >= 2x @fastify/websocket' },
  { issue: 5, scenario: 'echo64k', peer: 'ws', op: '>=', ratio: 1, text: '64 KiB throughput >= ws' },
  { issue: 5, scenario: 'latency', peer: 'fastify-websocket', op: '<=', ratio: 1, text: 'p99 latency <= @fastify/websocket' },
  { issue: 5, scenario: 'handshakes', peer: 'fastify-websocket', op: '>=', ratio: 1.3, text: 'handshakes/s >= 1.3x @fastify/websocket' },
  { issue: 5, scenario: 'rss', peer: 'fastify-websocket', op: '<=', ratio: 0.6, text: 'RSS per idle connection <= 0.6x @fastify/websocket' },
  { issue: 12, scenario: 'json', peer: 'plugin-unvalidated', op: '>=', ratio: 0.85, text: 'validated JSON echo >= 0.85x the same plugin with JSON by hand, unvalidated' },
  { issue: 12, scenario: 'json', peer: 'fastify-websocket', op: '>=', ratio: 5, text: 'validated JSON echo >= 5x @fastify/websocket with ajv by hand' }
]

// ---------------------------------------------------------------------------------------------
// Arguments

function parseArgs (argv) {
  const opts = { quick: false, only: null, servers: null, rounds: null, pin: true, reportOnly: false, out: null, maxWait: null, profile: null, retries: null, budget: null, merge: true }
  for (const a of argv) {
    const [k, v] = a.split('=')
    if (k === '--quick') opts.quick = true
    else if (k === '--only') opts.only = v.split(',').filter(Boolean)
    else if (k === '--servers') opts.servers = v.split(',').filter(Boolean)
    else if (k === '--rounds') opts.rounds = Number(v)
    else if (k === '--no-pin') opts.pin = false
    else if (k === '--no-merge') opts.merge = false
    else if (k === '--report-only') opts.reportOnly = true
    else if (k === '--out') opts.out = v
    else if (k === '--max-wait') opts.maxWait = Number(v)
    else if (k === '--retries') opts.retries = Number(v)
    else if (k === '--budget') opts.budget = Number(v)
    else if (k === '--profile') opts.profile = v || '/tmp/bench-profiles'
    else if (k === '--help' || k === '-h') {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(0, 25).join('\n') + '\n')
      process.exit(0)
    } else {
      process.stderr.write(`unknown argument ${a} (try --help)\n`)
      process.exit(2)
    }
  }
  opts.out ??= opts.quick ? join(HERE, '.tmp') : HERE
  opts.retries ??= opts.quick ? 0 : 2
  opts.maxWait ??= opts.quick ? 5 : 30
  opts.budget ??= opts.quick ? 3 : 30
  mkdirSync(opts.out, { recursive: true })
  if (opts.profile) mkdirSync(opts.profile, { recursive: true })
  for (const s of opts.only ?? []) if (!SCENARIOS[s]) die(`unknown scenario ${s}; one of ${Object.keys(SCENARIOS).join(', ')}`)
  for (const s of opts.servers ?? []) if (!SERVERS[s]) die(`unknown server ${s}; one of ${Object.keys(SERVERS).join(', ')}`)
  return opts
}

function die (msg) {
  process.stderr.write(`run.js: ${msg}\n`)
  process.exit(2)
}

// ---------------------------------------------------------------------------------------------
// Child processes

const children = new Set()

function killAll () {
  for (const c of children) {
    try { c.kill('SIGKILL') } catch { /* already gone */ }
  }
  children.clear()
}
process.on('exit', killAll)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killAll(); process.exit(130) })
}

let HAVE_TASKSET = false
try { execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' }); HAVE_TASKSET = true } catch { /* absent */ }

/** Spawn `node args...` through bash (to raise the fd limit), pinned to `core` when possible. */
function spawnNode (core, nodeArgs, pin) {
  const cmd = []
  if (pin && HAVE_TASKSET && cpus().length > 1) cmd.push('taskset', '-c', String(core))
  cmd.push(process.execPath, ...nodeArgs)
  const script = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"'
  const child = spawn('bash', ['-c', script, 'bench', ...cmd], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  return child
}

/** Collect lines from a stream, resolving when `match` matches one (or rejecting on exit/timeout). */
function waitForLine (child, prefix, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    let out = ''
    let err = ''
    const timer = setTimeout(() => finish(new Error(`${what}: no ${prefix} line within ${timeoutMs} ms; stderr: ${err.slice(-500)}`)), timeoutMs)
    const onOut = (d) => {
      out += d
      let nl
      while ((nl = out.indexOf('\n')) !== -1) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        if (line.startsWith(prefix + ' ')) return finish(null, JSON.parse(line.slice(prefix.length + 1)))
      }
    }
    const onErr = (d) => { err += d; if (err.length > 20000) err = err.slice(-10000) }
    const onExit = (code) => finish(new Error(`${what} exited (code ${code}) before ${prefix}; stderr: ${err.slice(-800)}`))
    function finish (e, v) {
      clearTimeout(timer)
      child.stdout.off('data', onOut)
      child.stderr.off('data', onErr)
      child.off('exit', onExit)
      child.stderr.on('data', () => {}) // keep draining
      child.stdout.on('data', () => {})
      if (e) reject(e); else resolve(v)
    }
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    child.stdout.on('data', onOut)
    child.stderr.on('data', onErr)
    child.on('exit', onExit)
  })
}

async function startServer (name, flags, pin, profileDir) {
  const prof = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`] : []
  const child = spawnNode(0, ['--expose-gc', ...prof, join('bench', SERVERS[name].script), '0', '0', ...flags], pin)
  try {
    const ready = await waitForLine(child, 'READY', 20000, `server ${name}`)
    return { child, ...ready }
  } catch (err) {
    child.kill('SIGKILL')
    throw err
  }
}

async function stopServer (server) {
  const { child } = server
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise((resolve) => child.once('exit', resolve))
  child.stdin.end()
  child.kill('SIGTERM')
  const t = setTimeout(() => child.kill('SIGKILL'), 1500)
  await gone
  clearTimeout(t)
}

async function runLoadgen (params, pin) {
  const child = spawnNode(1, [join('bench', 'loadgen.js'), JSON.stringify(params)], pin)
  const limit = ((params.warmup ?? 0) + (params.duration ?? 0) + (params.timeout ?? 60) + 10) * 1000
  try {
    return await waitForLine(child, 'RESULT', limit, `loadgen ${params.scenario}`)
  } finally {
    if (child.exitCode === null) {
      const t = setTimeout(() => child.kill('SIGKILL'), 2000)
      await new Promise((resolve) => { if (child.exitCode !== null) resolve(); else child.once('exit', resolve) })
      clearTimeout(t)
    }
  }
}

/** Share of CPU time (all cores) spent busy over `ms`, from /proc/stat; null when unavailable. */
async function cpuBusy (ms = 300) {
  const read = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    const idle = f[3] + (f[4] || 0)
    const total = f.reduce((a, b) => a + b, 0)
    return { idle, total }
  }
  try {
    const a = read()
    await sleep(ms)
    const b = read()
    const total = b.total - a.total
    return total > 0 ? 1 - (b.idle - a.idle) / total : null
  } catch { return null }
}

/** Busy and total jiffies of the whole machine, and CPU jiffies of one process. */
function machineTicks () {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    const total = f.reduce((a, b) => a + b, 0)
    return { busy: total - f[3] - (f[4] || 0), total }
  } catch { return null }
}
function processTicks (pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = st.slice(st.lastIndexOf(')') + 2).split(' ')
    return Number(fields[11]) + Number(fields[12]) // utime + stime (fields 14 and 15 of stat)
  } catch { return null }
}
const TICKS_PER_SECOND = 100 // USER_HZ on Linux

/**
 * Wait (at most maxWaitS) for the machine to be quiet before a measurement, since other
 * processes on a 2-core box distort everything. Returns the last busy share seen.
 */
async function waitQuiet (maxWaitS, threshold = 0.15) {
  const until = Date.now() + maxWaitS * 1000
  let busy = await cpuBusy()
  let warned = false
  while (busy !== null && busy > threshold && Date.now() < until) {
    if (!warned) { process.stderr.write(`  machine busy (${(busy * 100).toFixed(0)}% CPU used by other processes); waiting up to ${maxWaitS}s...\n`); warned = true }
    await sleep(700)
    busy = await cpuBusy()
  }
  return busy
}

// ---------------------------------------------------------------------------------------------
// Statistics

function quantile (sorted, q) {
  if (sorted.length === 0) return NaN
  const pos = (sorted.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
}

function summarize (samples) {
  const s = samples.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  return { n: s.length, median: quantile(s, 0.5), min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN, q1: quantile(s, 0.25), q3: quantile(s, 0.75) }
}

// ---------------------------------------------------------------------------------------------
// Machine description

function machine () {
  let cpuModel = cpus()[0]?.model ?? 'unknown'
  try {
    const m = readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m)
    if (m) cpuModel = m[1].trim()
  } catch { /* not Linux */ }
  let kernel = ''
  try { kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim() } catch { /* not Linux */ }
  const pkg = (name) => { try { return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version } catch { return '?' } }
  return {
    cpu: cpuModel,
    cores: cpus().length,
    mhz: cpus()[0]?.speed ?? null,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    kernel,
    taskset: HAVE_TASKSET,
    versions: { fastify: pkg('fastify'), '@fastify/websocket': pkg('@fastify/websocket'), ws: pkg('ws') },
    pluginBuild: pluginBuild(),
    date: new Date().toISOString()
  }
}

/** Which build of the plugin was measured: newest mtime and a hash of every .js file under dist/lib. */
function pluginBuild () {
  const dir = join(ROOT, 'dist', 'lib')
  try {
    const files = readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.js')).sort()
    const hash = createHash('sha1')
    let newest = 0
    for (const f of files) {
      hash.update(f).update(readFileSync(join(dir, f)))
      newest = Math.max(newest, statSync(join(dir, f)).mtimeMs)
    }
    return { builtAt: new Date(newest).toISOString(), sha1: hash.digest('hex').slice(0, 12) }
  } catch { return null }
}

// ---------------------------------------------------------------------------------------------
// Main run

async function runAll (opts) {
  const mode = opts.quick ? 'quick' : 'full'
  const rounds = opts.rounds ?? (opts.quick ? 1 : 3)
  const scenarioNames = opts.only ?? Object.keys(SCENARIOS)
  let allowed = opts.servers ?? Object.keys(SERVERS)
  if (allowed.some((s) => PLUGIN_SERVERS.includes(s)) && !existsSync(join(ROOT, 'dist', 'lib', 'index.js'))) {
    process.stderr.write('run.js: dist/lib/index.js is missing (run `npm run build`); skipping the plugin servers\n')
    allowed = allowed.filter((s) => !PLUGIN_SERVERS.includes(s))
  }
  /** The servers a scenario runs: those it names, else every server not reserved to the scenarios naming it. */
  const serversOf = (def) => def.servers ? Object.keys(def.servers).filter((s) => allowed.includes(s)) : allowed.filter((s) => !SERVERS[s].only)
  const used = [...new Set(scenarioNames.flatMap((scen) => serversOf(SCENARIOS[scen])))]
  const results = {
    machine: machine(),
    mode,
    rounds,
    pinned: opts.pin && HAVE_TASKSET && cpus().length > 1,
    servers: Object.fromEntries(used.map((s) => [s, SERVERS[s].label])),
    scenarios: {}
  }
  const t0 = Date.now()
  for (const scen of scenarioNames) {
    const def = SCENARIOS[scen]
    const params = def[mode]
    const serverNames = serversOf(def)
    const entry = results.scenarios[scen] = {
      title: def.title,
      unit: def.unit,
      better: def.better,
      setup: def.describe(params),
      params,
      // When and with which build this entry was measured (entries of other runs may be merged in later).
      measured: { date: new Date().toISOString(), mode, rounds, cpu: results.machine.cpu, node: results.machine.node, pluginBuild: results.machine.pluginBuild?.sha1 ?? null },
      runs: Object.fromEntries(serverNames.map((s) => [s, []])),
      discarded: [] // noisy attempts that were retried
    }
    for (let r = 0; r < rounds; r++) {
      // Alternate servers within a round and rotate the order between rounds.
      const order = serverNames.map((_, i) => serverNames[(i + r) % serverNames.length])
      for (const name of order) {
        const label = `[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${scen} round ${r + 1}/${rounds} ${name}`
        let result
        for (let attempt = 0; ; attempt++) {
          const overBudget = Date.now() - t0 > opts.budget * 60000
          const path = def.servers?.[name]
          result = await measureOnce(name, scen, def, path ? { ...params, path } : params, opts, overBudget ? 0 : opts.maxWait)
          process.stderr.write(`${label}${attempt ? ` (retry ${attempt})` : ''}: ${describeResult(result, def)}\n`)
          if (!isNoisy(result) || attempt >= opts.retries || Date.now() - t0 > opts.budget * 60000) break
          entry.discarded.push({ server: name, round: r + 1, ...result })
        }
        entry.runs[name].push(result)
        await sleep(100)
      }
    }
    summarizeScenario(entry, def)
  }
  results.elapsedSeconds = Math.round((Date.now() - t0) / 1000)
  return results
}

/** One measurement: fresh server, fresh load generator, CPU accounting of everything else. */
async function measureOnce (name, scen, def, params, opts, maxWait) {
  let result
  let server = null
  const busyBefore = await waitQuiet(maxWait)
  try {
    server = await startServer(name, def.serverFlags ?? [], opts.pin, opts.profile)
    const m0 = machineTicks()
    const s0 = processTicks(server.pid)
    result = await runLoadgen({ scenario: scen, port: server.port, ctl: server.ctl, ...params }, opts.pin)
    const m1 = machineTicks()
    const s1 = processTicks(server.pid)
    if (m0 && m1 && s0 !== null && s1 !== null && Number.isFinite(result.loadgenCpuSeconds)) {
      // CPU used by everything except our server and load generator, in cores.
      const cores = cpus().length
      const wall = (m1.total - m0.total) / cores
      const others = (m1.busy - m0.busy) - (s1 - s0) - result.loadgenCpuSeconds * TICKS_PER_SECOND
      result.serverCpuCores = +((s1 - s0) / wall).toFixed(3)
      result.otherCpuCores = +(Math.max(0, others) / wall).toFixed(3)
    }
  } catch (err) {
    result = { error: err.message }
  } finally {
    if (server) await stopServer(server)
  }
  if (busyBefore !== null) result.busyBefore = +busyBefore.toFixed(3)
  await sleep(100)
  return result
}

function describeResult (r, def) {
  if (r.skipped) return `skipped (${r.skipped})`
  if (r.error) return `ERROR ${r.error}`
  let s = `${fmt(r.value)} ${def.unit}`
  if (isNoisy(r)) s += ` [NOISY: other processes used ${fmt(r.otherCpuCores)} cores during the run]`
  if (def.extra) s += ' (' + def.extra.map((k) => `${k}=${fmt(r[k])}`).join(' ') + ')'
  if (r.errors) s += ` [${r.errors} bad echoes: ${r.problems?.join('; ')}]`
  if (r.connectionsLost) s += ` [${r.connectionsLost} connections lost]`
  if (r.failures) s += ` [${r.failures} failures: ${r.lastError}]`
  if (r.slowCycles) s += ` [${r.slowCycles} cycles > 200 ms, slowest ${fmt(r.slowestMs)} ms]`
  if (r.dropped) s += ` [${r.dropped} sends dropped: generator fell behind]`
  if (r.compressedShare !== undefined && def.serverFlags) s += ` [compressed ${(r.compressedShare * 100).toFixed(0)}%]`
  if (r.invalidAnswer !== undefined) s += ` [schema-breaking message: ${r.invalidAnswer}]`
  return s
}

/** Other processes took more than a fifth of a core while this run was measured. */
const NOISE_CORES = 0.2
function isNoisy (r) {
  return r.otherCpuCores > NOISE_CORES
}

function summarizeScenario (entry, def) {
  entry.summary = {}
  for (const [name, runs] of Object.entries(entry.runs)) {
    const valid = runs.filter((r) => !r.error && !r.skipped && Number.isFinite(r.value))
    // Prefer runs on a quiet machine; fall back to all runs when every run was disturbed.
    const quiet = valid.filter((r) => !isNoisy(r))
    const ok = quiet.length > 0 ? quiet : valid
    const s = summarize(ok.map((r) => r.value))
    if (def.extra) s.extra = Object.fromEntries(def.extra.map((k) => [k, summarize(ok.map((r) => r[k])).median]))
    s.noisy = valid.length - quiet.length
    s.usedNoisy = quiet.length === 0 && valid.length > 0
    s.skipped = runs.find((r) => r.skipped)?.skipped ?? null
    s.errors = runs.filter((r) => r.error).map((r) => r.error)
    entry.summary[name] = s
  }
  entry.ratios = {}
  const plugin = entry.summary.plugin
  if (plugin && plugin.n > 0) {
    for (const peer of PEERS) {
      const p = entry.summary[peer]
      if (p && p.n > 0 && p.median !== 0) entry.ratios[peer] = plugin.median / p.median
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reports

function fmt (v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–'
  const a = Math.abs(v)
  if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M'
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k'
  if (a >= 100) return v.toFixed(0)
  if (a >= 10) return v.toFixed(1)
  return v.toFixed(2)
}

function ratioText (ratio, better) {
  if (!Number.isFinite(ratio)) return '–'
  const good = better === 'higher' ? ratio >= 1 : ratio <= 1
  return `${ratio.toFixed(2)}x ${good ? '(plugin better)' : '(plugin worse)'}`
}

function targetStatus (results, t) {
  const entry = results.scenarios[t.scenario]
  const ratio = entry?.ratios?.[t.peer]
  if (!Number.isFinite(ratio)) return { ratio: NaN, pass: null }
  return { ratio, pass: t.op === '>=' ? ratio >= t.ratio : ratio <= t.ratio }
}

function writeMarkdown (results, file) {
  const m = results.machine
  const L = []
  L.push('# fastify-rfc6455 benchmark results', '')
  L.push(`Generated by \`node bench/run.js${results.mode === 'quick' ? ' --quick' : ''}\` on ${m.date} (${results.mode} mode, ${results.rounds} round(s), ${results.elapsedSeconds ?? '?'} s).`, '')
  if (results.kept?.length) {
    L.push(`That run measured ${Object.keys(results.scenarios).filter((n) => !results.kept.includes(n)).map((n) => `\`${n}\``).join(', ')}; ` +
      `the results of ${results.kept.map((n) => `\`${n}\``).join(', ')} are kept from earlier runs (\`--only\` merges into results.json), ` +
      'each section says when, on which CPU and with which plugin build it was measured. The machine lines below describe the latest run; ' +
      'compare ratios between sections measured apart, not absolute numbers.', '')
  }
  L.push('## Machine', '')
  L.push(`- CPU: ${m.cpu}, ${m.cores} cores${m.mhz ? ` @ ${m.mhz} MHz` : ''}, ${m.memoryGiB} GiB RAM`)
  L.push(`- Node ${m.node}${m.kernel ? `, Linux ${m.kernel}` : ''}`)
  L.push(`- fastify ${m.versions.fastify}, @fastify/websocket ${m.versions['@fastify/websocket']}, ws ${m.versions.ws} (without the optional bufferutil / utf-8-validate native add-ons)`)
  if (m.pluginBuild) L.push(`- Plugin build measured: dist/lib built ${m.pluginBuild.builtAt}, sha1 of dist/lib/**/*.js ${m.pluginBuild.sha1}`)
  L.push(`- Server pinned to core 0 and load generator to core 1 with taskset: ${results.pinned ? 'yes' : 'no'}`)
  const allRuns = Object.values(results.scenarios).flatMap((e) => Object.values(e.runs).flat())
  const noisyRuns = allRuns.filter(isNoisy).length
  const discarded = Object.values(results.scenarios).reduce((n, e) => n + (e.discarded?.length ?? 0), 0)
  L.push(`- Kept runs during which other processes used more than ${NOISE_CORES} core: ${noisyRuns} of ${allRuns.length}` +
    (discarded ? `; ${discarded} further disturbed attempts were retried and discarded (kept in results.json)` : '') +
    '. Medians use only the quiet runs of a server when it has any (the Rounds column shows quiet/total).')
  L.push('')
  L.push('## Method', '')
  L.push('Every measurement uses a fresh server process (`bench/servers/*.js`) and a fresh load-generator process (`bench/loadgen.js`, raw `net` sockets, pre-built masked frames, its own handshake), both bound to 127.0.0.1. ' +
    'Servers alternate within a round and the order rotates between rounds. Each cell shows the median over rounds and the spread (min–max). ' +
    'Ratios are plugin median ÷ peer median; for "lower is better" metrics a ratio below 1 means the plugin wins. ' +
    '`raw-tcp` is a bare `net` echo that does only the handshake and frame bouncing (no validation): the ceiling for a Node server on this machine.', '')

  for (const [issue, heading] of Object.entries(ISSUES)) {
    L.push(`## ${heading}`, '')
    L.push('| Target | Measured ratio | Result |', '|---|---|---|')
    for (const t of TARGETS.filter((t) => String(t.issue) === issue)) {
      const st = targetStatus(results, t)
      L.push(`| ${t.text} (plugin ÷ ${t.peer} ${t.op} ${t.ratio}) | ${Number.isFinite(st.ratio) ? st.ratio.toFixed(2) : '–'} | ${st.pass === null ? 'not measured' : st.pass ? 'PASS' : 'FAIL'} |`)
    }
    L.push('')
  }

  for (const [name, e] of Object.entries(results.scenarios)) {
    L.push(`## ${e.title}`, '')
    L.push(`Setup: ${e.setup}. Unit: ${e.unit} (${e.better} is better).`, '')
    if (results.kept?.length && e.measured) {
      const mm = e.measured
      L.push(`Measured ${mm.date} on ${mm.cpu ?? '?'}, Node ${mm.node ?? '?'} (${mm.mode} mode, ${mm.rounds} round(s), plugin build ${mm.pluginBuild ?? '?'}).`, '')
    }
    const extraKeys = SCENARIOS[name]?.extra ?? []
    L.push(`| Server | Median | Spread (min–max) | Rounds |${extraKeys.map((k) => ` ${k} |`).join('')} Plugin ÷ server |`)
    L.push(`|---|---|---|---|${extraKeys.map(() => '---|').join('')}---|`)
    for (const [srv, s] of Object.entries(e.summary)) {
      const ratio = srv === 'plugin' ? '—' : ratioText(e.ratios[srv], e.better)
      const extras = extraKeys.map((k) => ` ${fmt(s.extra?.[k])} |`).join('')
      if (s.n === 0) {
        const why = s.skipped ? `skipped: ${s.skipped}` : s.errors.length ? `error: ${s.errors[0]}` : 'no data'
        L.push(`| ${srv} | ${why} | | 0 |${extraKeys.map(() => ' |').join('')} |`)
      } else {
        const rounds = `${s.usedNoisy ? 0 : s.n}/${s.n + (s.usedNoisy ? 0 : s.noisy)}${s.usedNoisy ? ' (all noisy)' : ''}`
        L.push(`| ${srv} | ${fmt(s.median)} | ${fmt(s.min)}–${fmt(s.max)} | ${rounds} |${extras} ${ratio} |`)
      }
    }
    L.push('')
  }
  L.push('![plugin ÷ peer ratios](ratios.svg)', '')
  const microFile = join(dirname(file), 'micro-results.json')
  if (existsSync(microFile)) {
    try {
      const micro = JSON.parse(readFileSync(microFile, 'utf8'))
      L.push('## Frame parser / writer micro-benchmarks (`node bench/micro.js`)', '')
      L.push(`Run ${micro.date}, Node ${micro.node}; median of ${micro.rounds} rounds x ${micro.msPerMeasurement} ms. ${micro.note}.`, '')
      L.push('| Kind | Case | plugin frames/s | ws frames/s | plugin ÷ ws |', '|---|---|---|---|---|')
      for (const r of micro.rows) {
        L.push(`| ${r.kind} | ${r.case} | ${fmt(r.opsPerSec.plugin)} | ${fmt(r.opsPerSec.ws)} | ${Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : '–'} |`)
      }
      L.push('')
    } catch { /* unreadable micro results: leave the section out */ }
  }
  // Sections other scripts write (HTTP/2, cluster) follow a marker line and are kept as they are.
  if (existsSync(file)) {
    const previous = readFileSync(file, 'utf8')
    const at = previous.indexOf(KEPT_MARKER)
    if (at >= 0) L.push(previous.slice(at).replace(/\n+$/, ''), '')
  }
  writeFileSync(file, L.join('\n'))
}

const KEPT_MARKER = '<!-- The sections below are written by other scripts'

function esc (s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** Diverging horizontal bars on a log2 axis: each bar runs from 1.0 to plugin/peer. */
function writeSvg (results, file) {
  const rows = []
  for (const [name, e] of Object.entries(results.scenarios)) {
    for (const peer of PEERS) {
      if (!(peer in (e.summary ?? {}))) continue
      const ratio = e.ratios?.[peer]
      const target = TARGETS.find((t) => t.scenario === name && t.peer === peer)
      rows.push({ scenario: name, title: e.title, better: e.better, peer, ratio, target })
    }
  }
  const finite = rows.map((r) => r.ratio).filter((v) => Number.isFinite(v) && v > 0)
  const lo = Math.min(0.25, ...finite.map((v) => v / 1.25))
  const hi = Math.max(4, ...finite.map((v) => v * 1.25))
  const lmin = Math.floor(Math.log2(lo))
  const lmax = Math.ceil(Math.log2(hi))
  const W = 900
  const left = 330
  const right = 90
  const rowH = 20
  const top = 56
  let groups = 0
  let prev = null
  for (const r of rows) { if (r.scenario !== prev) { groups++; prev = r.scenario } }
  const H = top + rows.length * rowH + groups * 22 + 40
  const x = (v) => left + (Math.log2(v) - lmin) / (lmax - lmin) * (W - left - right)
  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">fastify-rfc6455 ÷ peer (median of ${results.rounds} round(s), ${esc(results.mode)} mode, log scale)</text>`)
  out.push(`<text x="${W / 2}" y="38" text-anchor="middle" fill="#555">green = plugin better, red = plugin worse; ▲ = target; ${esc(results.machine.cpu)}, ${results.machine.cores} cores, Node ${esc(results.machine.node)}</text>`)
  const axisBottom = H - 30
  for (let e = lmin; e <= lmax; e++) {
    const v = 2 ** e
    const xx = x(v).toFixed(1)
    out.push(`<line x1="${xx}" y1="${top - 6}" x2="${xx}" y2="${axisBottom}" stroke="${e === 0 ? '#000' : '#ddd'}" stroke-width="${e === 0 ? 1.5 : 1}"/>`)
    out.push(`<text x="${xx}" y="${axisBottom + 14}" text-anchor="middle" fill="#333">${v >= 1 ? v : '1/' + 2 ** -e}</text>`)
  }
  let y = top
  prev = null
  for (const r of rows) {
    if (r.scenario !== prev) {
      y += 6
      out.push(`<text x="8" y="${y + 10}" font-weight="bold">${esc(r.title)} (${r.better} is better)</text>`)
      y += 16
      prev = r.scenario
    }
    out.push(`<text x="${left - 8}" y="${y + 14}" text-anchor="end" fill="#333">vs ${esc(r.peer)}</text>`)
    if (Number.isFinite(r.ratio) && r.ratio > 0) {
      const x0 = x(1)
      const x1 = x(Math.min(Math.max(r.ratio, 2 ** lmin), 2 ** lmax))
      const good = r.better === 'higher' ? r.ratio >= 1 : r.ratio <= 1
      out.push(`<rect x="${Math.min(x0, x1).toFixed(1)}" y="${y + 3}" width="${Math.max(1, Math.abs(x1 - x0)).toFixed(1)}" height="${rowH - 6}" fill="${good ? '#2e9e4f' : '#d0453a'}"/>`)
      out.push(`<text x="${W - right + 6}" y="${y + 14}" fill="#000">${r.ratio.toFixed(2)}x</text>`)
    } else {
      out.push(`<text x="${x(1) + 6}" y="${y + 14}" fill="#888">not measured</text>`)
    }
    if (r.target) {
      const tx = x(r.target.ratio)
      out.push(`<path d="M ${tx.toFixed(1)} ${y + rowH - 4} l -5 7 l 10 0 z" fill="#1f4fb4"><title>target ${esc(r.target.text)}</title></path>`)
    }
    y += rowH
  }
  out.push('</svg>')
  writeFileSync(file, out.join('\n') + '\n')
}

/**
 * A run of some scenarios (`--only`) replaces their entries in dir/results.json and keeps the others, in
 * SCENARIOS order, when that file holds results of the same mode (a quick run never mixes with full results).
 * Kept entries carry when and with which build they were measured (`measured`, filled in from the old file's
 * machine line for files written before entries had it).
 */
function mergePrevious (results, dir) {
  const file = join(dir, 'results.json')
  if (!existsSync(file)) return results
  let old
  try { old = JSON.parse(readFileSync(file, 'utf8')) } catch (err) {
    process.stderr.write(`run.js: cannot read ${file} (${err.message}); writing only this run's scenarios\n`)
    return results
  }
  if (old.mode !== results.mode) {
    process.stderr.write(`run.js: ${file} holds ${old.mode} results, this run is ${results.mode}; writing only this run's scenarios\n`)
    return results
  }
  const kept = Object.keys(old.scenarios ?? {}).filter((n) => !(n in results.scenarios))
  if (kept.length === 0) return results
  for (const n of kept) {
    old.scenarios[n].measured ??= { date: old.machine?.date ?? null, mode: old.mode, rounds: old.rounds, cpu: old.machine?.cpu ?? null, node: old.machine?.node ?? null, pluginBuild: old.machine?.pluginBuild?.sha1 ?? null }
  }
  const order = [...new Set([...Object.keys(SCENARIOS), ...kept])]
  const scenarios = {}
  for (const n of order) {
    if (n in results.scenarios) scenarios[n] = results.scenarios[n]
    else if (kept.includes(n)) scenarios[n] = old.scenarios[n]
  }
  return { ...results, servers: { ...old.servers, ...results.servers }, scenarios, kept }
}

function writeReports (results, dir) {
  writeFileSync(join(dir, 'results.json'), JSON.stringify(results, null, 2) + '\n')
  writeMarkdown(results, join(dir, 'RESULTS.md'))
  writeSvg(results, join(dir, 'ratios.svg'))
}

function printSummary (results) {
  const lines = ['', 'Summary (median; plugin ÷ peer):']
  for (const [, e] of Object.entries(results.scenarios)) {
    const parts = Object.entries(e.summary).map(([s, v]) => `${s}=${v.n ? fmt(v.median) : (v.skipped ? 'skipped' : 'error')}`)
    const ratios = Object.entries(e.ratios).map(([p, r]) => `/${p} ${r.toFixed(2)}`)
    lines.push(`  ${e.title} [${e.unit}]: ${parts.join('  ')}${ratios.length ? '  |  ' + ratios.join('  ') : ''}`)
  }
  for (const [issue, heading] of Object.entries(ISSUES)) {
    lines.push('', `${heading}:`)
    for (const t of TARGETS.filter((t) => String(t.issue) === issue)) {
      const st = targetStatus(results, t)
      lines.push(`  ${st.pass === null ? 'n/a ' : st.pass ? 'PASS' : 'FAIL'}  ${t.text}: ${Number.isFinite(st.ratio) ? st.ratio.toFixed(2) : '–'}`)
    }
  }
  process.stdout.write(lines.join('\n') + '\n')
}

// ---------------------------------------------------------------------------------------------

const opts = parseArgs(process.argv.slice(2))
if (opts.reportOnly) {
  const results = JSON.parse(readFileSync(join(opts.out, 'results.json'), 'utf8'))
  writeMarkdown(results, join(opts.out, 'RESULTS.md'))
  writeSvg(results, join(opts.out, 'ratios.svg'))
  printSummary(results)
} else {
  let results = await runAll(opts)
  if (opts.merge && opts.only) results = mergePrevious(results, opts.out)
  writeReports(results, opts.out)
  printSummary(results)
  process.stderr.write(`wrote ${join(opts.out, 'results.json')}, RESULTS.md, ratios.svg\n`)
}
killAll()
