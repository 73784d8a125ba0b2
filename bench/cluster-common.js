// Shared plumbing of the cluster benchmark (bench/cluster.js) and the cluster soak (scripts/soak-cluster.js):
// a redis-server of our own on a free port, child processes driven over IPC (request → one reply, with a
// deadline), a snapshot of the built plugin, CPU time of processes, and a latency histogram that can be merged
// across processes.
import { spawn } from 'node:child_process'
import { createServer, connect } from 'node:net'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, existsSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const children = new Set()
let hookInstalled = false

function installExitHook () {
  if (hookInstalled) return
  hookInstalled = true
  process.on('exit', () => {
    for (const c of children) { try { c.kill('SIGKILL') } catch {} }
  })
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => { process.exit(130) })
  }
}

// Microseconds on CLOCK_MONOTONIC (the clock of process.hrtime, shared by every process of the machine), read
// through performance.now() (same clock, no BigInt) after one calibration.
// The first calls of either are slow (lazy set-up): warm both, then keep the tightest of a few brackets.
const MONO_BASE = (() => {
  performance.now()
  process.hrtime.bigint()
  let best = Infinity
  let base = 0
  for (let i = 0; i < 20; i++) {
    const a = performance.now()
    const h = Number(process.hrtime.bigint()) / 1000
    const b = performance.now()
    if (b - a < best) { best = b - a; base = h - (a + b) / 2 * 1000 }
  }
  return base
})()
export const monoUs = () => MONO_BASE + performance.now() * 1000

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export async function freePort () {
  const server = createServer()
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** One RESP command on a fresh connection; resolves with the raw reply text. */
export function redisRaw (port, args, ms = 2000) {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' })
    let text = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`redis ${args[0]}: no reply in ${ms} ms`)) }, ms)
    socket.on('error', (err) => { clearTimeout(timer); reject(err) })
    socket.on('data', (d) => {
      text += d.toString('latin1')
      if (text.endsWith('\r\n')) { clearTimeout(timer); socket.destroy(); resolve(text) }
    })
    socket.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join(''))
  })
}

/**
 * A redis-server of our own: free port on 127.0.0.1, no persistence, its own temp dir, pinned with taskset when
 * `cpu` is given. Killed with the process at the latest.
 */
export async function startRedis ({ cpu } = {}) {
  installExitHook()
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'bench-redis-'))
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
    '--daemonize', 'no', '--maxclients', '1000', '--loglevel', 'warning']
  const cmd = cpu === undefined ? ['redis-server', ...args] : ['taskset', '-c', String(cpu), 'redis-server', ...args]
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  const deadline = Date.now() + 5000
  for (;;) {
    try {
      if ((await redisRaw(port, ['PING'], 500)).startsWith('+PONG')) break
    } catch {}
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('redis-server did not start')
    await sleep(50)
  }
  const version = (await redisRaw(port, ['INFO', 'server'])).match(/redis_version:(\S+)/)?.[1] ?? '?'
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    version,
    async stop () {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await Promise.race([exited, sleep(2000)])
        if (child.exitCode === null) child.kill('SIGKILL')
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/**
 * A node child process with an IPC channel, optionally pinned to `cpu`, whose stdin is a pipe (it exits when
 * we do). `request(msg)` sends `{ ...msg, id }` and resolves with the child's reply `{ id, ... }`.
 */
export function startChild (script, { args = [], cpu, env = {}, execArgv = [], name = script } = {}) {
  installExitHook()
  const nodeArgs = [...execArgv, script, ...args]
  const cmd = cpu === undefined ? [process.execPath, ...nodeArgs] : ['taskset', '-c', String(cpu), process.execPath, ...nodeArgs]
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env } })
  children.add(child)
  const pending = new Map()
  let nextId = 1
  const listeners = new Set()
  const seen = []
  child.on('message', (m) => {
    const p = pending.get(m.id)
    if (p !== undefined) {
      pending.delete(m.id)
      clearTimeout(p.timer)
      if (m.error !== undefined) p.reject(new Error(`${name}: ${m.error}`))
      else p.resolve(m)
      return
    }
    seen.push(m)
    for (const l of listeners) l(m)
  })
  // 'close' (not 'exit'): it comes after the IPC channel is drained, so a reply sent just before exiting still arrives.
  child.on('close', (code, signal) => {
    children.delete(child)
    for (const p of pending.values()) { clearTimeout(p.timer); p.reject(new Error(`${name} exited (${code ?? signal})`)) }
    pending.clear()
  })
  return {
    child,
    pid: child.pid,
    onMessage (fn) { listeners.add(fn) },
    request (msg, ms = 60_000) {
      return new Promise((resolve, reject) => {
        const id = nextId++
        const timer = setTimeout(() => { pending.delete(id); reject(new Error(`${name}: no reply to ${msg.cmd} within ${ms} ms`)) }, ms)
        pending.set(id, { resolve, reject, timer })
        try { child.send({ ...msg, id }) } catch (err) { pending.delete(id); clearTimeout(timer); reject(err) }
      })
    },
    /** Wait for the first unsolicited message matching `pred`. */
    waitFor (pred, ms = 30_000) {
      const before = seen.find(pred)
      if (before !== undefined) return Promise.resolve(before)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { listeners.delete(fn); reject(new Error(`${name}: timed out waiting`)) }, ms)
        const fn = (m) => { if (pred(m)) { clearTimeout(timer); listeners.delete(fn); resolve(m) } }
        listeners.add(fn)
        child.once('exit', () => { clearTimeout(timer); listeners.delete(fn); reject(new Error(`${name} exited`)) })
      })
    },
    async stop (ms = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      try { child.stdin.end() } catch {}
      try { child.kill('SIGTERM') } catch {}
      await Promise.race([exited, sleep(ms)])
      if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited }
    }
  }
}

/** Exit when the parent goes away (stdin closes) or on SIGTERM, and after `maxMs` at the latest. */
export function exitWithParent (maxMs = 30 * 60 * 1000, cleanup = () => {}) {
  let done = false
  const exit = (why) => {
    if (done) return
    done = true
    if (process.env.CLUSTER_DEBUG) process.stderr.write(`${process.argv[1]} ${process.pid}: exiting (${why})\n`)
    setTimeout(() => process.exit(0), 1000).unref()
    Promise.resolve().then(cleanup).catch(() => {}).finally(() => process.exit(0))
  }
  if (process.env.CLUSTER_DEBUG) {
    process.on('exit', (code) => { process.stderr.write(`${process.argv[1]} ${process.pid}: exit ${code} ${new Error('at').stack}\n`) })
  }
  process.stdin.on('end', () => exit('stdin closed'))
  process.stdin.on('error', () => exit('stdin error'))
  process.stdin.resume()
  process.on('SIGTERM', () => exit('SIGTERM'))
  process.on('disconnect', () => exit('IPC channel closed'))
  setTimeout(() => exit('max lifetime'), maxMs).unref()
}

/** Serve IPC requests `{ id, cmd, ... }` with `handlers[cmd](msg)` (sync or async); errors are sent back. */
export function serveRequests (handlers) {
  process.on('message', (m) => {
    const h = handlers[m.cmd]
    if (h === undefined) { process.send({ id: m.id, error: `unknown command ${m.cmd}` }); return }
    Promise.resolve().then(() => h(m)).then(
      (r) => process.send({ ...(r ?? {}), id: m.id }),
      (err) => process.send({ id: m.id, error: String(err?.stack ?? err) })
    )
  })
}

/** Copy dist/lib to a private dir, so that a concurrent `npm run build` cannot change the plugin under a run. */
export function snapshotPlugin () {
  const src = join(ROOT, 'dist', 'lib')
  if (!existsSync(join(src, 'index.js'))) throw new Error('dist/lib/index.js is missing: run `npm run build` first')
  mkdirSync(join(ROOT, 'bench', '.tmp'), { recursive: true })
  const dir = mkdtempSync(join(ROOT, 'bench', '.tmp', 'cluster-dist-'))
  cpSync(src, join(dir, 'lib'), { recursive: true })
  const hash = createHash('sha1')
  const walk = (d) => {
    for (const f of readdirSync(d).sort()) {
      const p = join(d, f)
      if (statSync(p).isDirectory()) walk(p)
      else if (f.endsWith('.js')) hash.update(readFileSync(p))
    }
  }
  walk(join(dir, 'lib'))
  const builtAt = statSync(join(src, 'index.js')).mtime.toISOString()
  return { dir, entry: join(dir, 'lib', 'index.js'), sha1: hash.digest('hex').slice(0, 12), builtAt, remove () { rmSync(dir, { recursive: true, force: true }) } }
}

/** utime+stime of a process in seconds (from /proc), or NaN. */
export function cpuSeconds (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / 100
  } catch { return NaN }
}

/** Total CPU seconds of the machine (all cores, not idle) from /proc/stat. */
export function machineBusySeconds () {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const idle = f[3] + (f[4] ?? 0)
  return (f.reduce((a, b) => a + b, 0) - idle) / 100
}

// ---- latency histogram: 1 µs buckets below 100 µs, then buckets 1% wide ----

const LINEAR = 100
const STEP = Math.log(1.01)
export const HIST_SIZE = LINEAR + Math.ceil(Math.log(600e6 / LINEAR) / STEP) + 1

export function histIndex (us) {
  if (us < LINEAR) return us < 0 ? 0 : Math.floor(us)
  const i = LINEAR + Math.floor(Math.log(us / LINEAR) / STEP)
  return i < HIST_SIZE ? i : HIST_SIZE - 1
}

function histValue (i) {
  return i < LINEAR ? i : LINEAR * Math.exp((i - LINEAR) * STEP)
}

/** Sparse form for IPC: [[index, count], ...]. */
export function histSparse (h) {
  const out = []
  for (let i = 0; i < h.length; i++) if (h[i] !== 0) out.push([i, h[i]])
  return out
}

export function histMerge (sparseList) {
  const h = new Float64Array(HIST_SIZE)
  for (const s of sparseList) for (const [i, n] of s) h[i] += n
  return h
}

/** Percentiles (µs, lower bound of the bucket) of a dense histogram. */
export function histPercentiles (h, ps = [50, 99, 99.9]) {
  let total = 0
  for (let i = 0; i < h.length; i++) total += h[i]
  const out = {}
  for (const p of ps) {
    const want = total * p / 100
    let acc = 0
    let v = NaN
    for (let i = 0; i < h.length; i++) {
      acc += h[i]
      if (acc >= want && h[i] > 0) { v = histValue(i); break }
    }
    out[`p${p}`] = total === 0 ? NaN : Math.round(v)
  }
  out.count = total
  return out
}

export function fmtNum (v, digits = 3) {
  if (!Number.isFinite(v)) return '–'
  const a = Math.abs(v)
  if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M'
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k'
  if (a >= 100) return v.toFixed(0)
  return v.toPrecision(digits)
}

/**
 * Wait (at most `maxMs`) until the rest of the machine is quiet: over a 1 s window, the CPU used by processes
 * other than `ownPids` stays below `cores`. Returns that CPU (cores) of the last window.
 */
export async function waitQuiet ({ maxMs = 30_000, cores = 0.3, ownPids = [] } = {}) {
  const deadline = Date.now() + maxMs
  for (;;) {
    const own0 = ownPids.reduce((a, p) => a + (cpuSeconds(p) || 0), 0)
    const busy0 = machineBusySeconds()
    await sleep(1000)
    const other = machineBusySeconds() - busy0 - (ownPids.reduce((a, p) => a + (cpuSeconds(p) || 0), 0) - own0)
    if (other < cores || Date.now() > deadline) return Math.max(0, other)
  }
}
