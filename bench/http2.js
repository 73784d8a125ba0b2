// WebSockets over HTTP/2 (RFC 8441) against WebSockets over HTTP/1.1, on the same plugin build and route.
//
//   node bench/http2.js                 3 rounds: 1,000 WebSockets over 10 HTTP/2 sessions vs 1,000 over HTTP/1.1
//   node bench/http2.js --quick         1 round, 200 WebSockets over 2 sessions, short echo phase
//   flags: --sockets=N --sessions=N --rounds=N --window=N --duration=S --no-pin --dist=PATH (default ../dist/lib/index.js)
//
// Per round and transport, in a fresh server process (pinned to core 0; this load generator to core 1):
//   - memory per WebSocket: server RSS and V8 heap after a full GC, with N WebSockets open, minus before any;
//   - opens/s: N WebSockets opened with at most 100 handshakes in flight (HTTP/1.1: TCP connect + GET upgrade;
//     HTTP/2: extended CONNECT streams spread over the sessions, which are connected before the clock starts);
//   - 32-byte echo msg/s: every socket keeps `window` 32-byte text messages in flight for `duration` seconds,
//     plus the server's CPU time per echoed message (user + system), which does not depend on how fast the load
//     generator is (Node's own http2 client for HTTP/2, raw TCP sockets for HTTP/1.1).
// Both transports are cleartext (h2c and ws://): the comparison is of the framing, not of TLS.
// Prints a Markdown table and one `RESULT {json}` line; a full run also writes bench/http2-results.json.
import { spawn, execFileSync } from 'node:child_process'
import net from 'node:net'
import http2 from 'node:http2'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const [k, v] = a.replace(/^--/, '').split('=')
  return [k, v ?? true]
}))

// ---------------------------------------------------------------------------------------------
// The server (a child process): one echo route; answers `mem` and `cpu` on stdin with one line on stdout.

async function serve (mode, dist) {
  const { default: Fastify } = await import('fastify')
  let websocket
  try {
    websocket = (await import(new URL(dist, import.meta.url).href)).default
  } catch (err) {
    process.stderr.write(`cannot load ${dist} (run \`npm run build\` first): ${err.message}\n`)
    process.exit(2)
  }
  const app = Fastify(mode === 'h2' ? { http2: true, http2SessionTimeout: 0 } : {})
  await app.register(websocket, { ports: 'any', origins: () => true })
  app.get('/echo', { websocket: true }, (socket) => {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  process.stdout.write(`READY ${app.server.address().port}\n`)
  const rl = createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    if (line === 'mem') {
      globalThis.gc?.()
      globalThis.gc?.()
      const m = process.memoryUsage()
      process.stdout.write(`MEM ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external })}\n`)
    } else if (line === 'cpu') {
      process.stdout.write(`CPU ${JSON.stringify(process.cpuUsage())}\n`)
    } else if (line === 'sockets') {
      process.stdout.write(`SOCKETS ${app.websocketServer.clients.size}\n`)
    }
  })
  rl.on('close', () => process.exit(0))
}

// ---------------------------------------------------------------------------------------------
// The load generator

const HERE = fileURLToPath(import.meta.url)
const FRAME = maskedText(Buffer.alloc(32, 'x'))
const REPLY_BYTES = 2 + 32 // unmasked server frame of a 32-byte text message
const OPEN_CONCURRENCY = 100

function maskedText (payload) {
  const mask = randomBytes(4)
  const out = Buffer.alloc(2 + 4 + payload.length)
  out[0] = 0x81
  out[1] = 0x80 | payload.length
  mask.copy(out, 2)
  for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i] ^ mask[i & 3]
  return out
}

function hasTaskset () {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

async function startServer (mode, pin) {
  const argv = ['--expose-gc', HERE, `--serve=${mode}`, ...(args.dist ? [`--dist=${args.dist}`] : [])]
  const child = pin ? spawn('taskset', ['-c', '0', process.execPath, ...argv], { stdio: ['pipe', 'pipe', 'inherit'] }) : spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })
  const waiting = []
  lines.on('line', (line) => { const w = waiting.shift(); if (w) w(line) })
  const next = () => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not answer')), 30_000)
    waiting.push((line) => { clearTimeout(timer); resolve(line) })
  })
  const ready = await next()
  if (!ready.startsWith('READY ')) throw new Error(`server: ${ready}`)
  const ask = async (what) => {
    const p = next()
    child.stdin.write(what + '\n')
    const line = await p
    return JSON.parse(line.slice(line.indexOf(' ') + 1))
  }
  return { port: Number(ready.slice(6)), ask, stop: () => { child.stdin.end(); child.kill() } }
}

/** Run `count` async openers with at most `limit` in flight. */
async function openAll (count, limit, open) {
  const out = new Array(count)
  let next = 0
  async function worker () {
    while (next < count) {
      const i = next++
      out[i] = await open(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker))
  return out
}

function openH1 (port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    socket.setNoDelay(true)
    let head = Buffer.alloc(0)
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.removeListener('data', onData)
      if (!head.subarray(0, 12).toString().startsWith('HTTP/1.1 101')) return reject(new Error(head.toString()))
      resolve({ write: (b) => socket.write(b), onData: (fn) => socket.on('data', fn), close: () => socket.destroy() })
    }
    socket.on('data', onData)
    socket.on('error', reject)
    socket.write(`GET /echo HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
  })
}

async function connectSessions (port, n) {
  return Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`)
    session.once('remoteSettings', (s) => s.enableConnectProtocol ? resolve(session) : reject(new Error('no RFC 8441')))
    session.once('error', reject)
  })))
}

function openH2 (session, port) {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'http', ':path': '/echo',
      ':authority': `127.0.0.1:${port}`, 'sec-websocket-version': '13'
    }, { endStream: false })
    stream.once('response', (h) => h[':status'] === 200
      ? resolve({ write: (b) => stream.write(b), onData: (fn) => stream.on('data', fn), close: () => stream.close() })
      : reject(new Error(`status ${h[':status']}`)))
    stream.once('error', reject)
  })
}

/** Keep `window` messages in flight on every socket; returns a counter of echoes received. */
function drive (sockets, window) {
  const batches = [Buffer.alloc(0)]
  for (let k = 1; k <= window; k++) batches.push(Buffer.concat(Array.from({ length: k }, () => FRAME)))
  const counter = { messages: 0, stop: false }
  for (const s of sockets) {
    let bytes = 0
    let counted = 0
    s.onData((chunk) => {
      bytes += chunk.length
      const done = Math.floor(bytes / REPLY_BYTES)
      const fresh = done - counted
      if (fresh === 0) return
      counted = done
      counter.messages += fresh
      if (!counter.stop) {
        for (let left = fresh; left > 0; left -= window) s.write(batches[Math.min(left, window)])
      }
    })
    s.write(batches[window])
  }
  return counter
}

async function measure (mode, p, pin) {
  const server = await startServer(mode, pin)
  try {
    const before = await server.ask('mem')
    const sessions = mode === 'h2' ? await connectSessions(server.port, p.sessions) : []
    const t0 = process.hrtime.bigint()
    const sockets = await openAll(p.sockets, OPEN_CONCURRENCY, (i) => mode === 'h2' ? openH2(sessions[i % sessions.length], server.port) : openH1(server.port))
    const openSeconds = Number(process.hrtime.bigint() - t0) / 1e9
    const open = await server.ask('sockets')
    if (open !== p.sockets) throw new Error(`${open} sockets open on the server, expected ${p.sockets}`)
    const after = await server.ask('mem')
    const counter = drive(sockets, p.window)
    await sleep(p.warmup * 1000)
    const cpu0 = await server.ask('cpu')
    const m0 = counter.messages
    const t1 = process.hrtime.bigint()
    await sleep(p.duration * 1000)
    const m1 = counter.messages
    const seconds = Number(process.hrtime.bigint() - t1) / 1e9
    const cpu1 = await server.ask('cpu')
    counter.stop = true
    const cpuMicros = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    for (const s of sockets) s.close()
    for (const session of sessions) session.destroy()
    return {
      mode,
      rssPerSocket: (after.rss - before.rss) / p.sockets,
      heapPerSocket: (after.heapUsed - before.heapUsed) / p.sockets,
      opensPerSec: p.sockets / openSeconds,
      msgPerSec: (m1 - m0) / seconds,
      serverCpuPerMsgMicros: cpuMicros / (m1 - m0),
      serverCpuPercent: cpuMicros / 1e4 / seconds
    }
  } finally {
    server.stop()
  }
}

function median (values) {
  const s = [...values].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function main () {
  const quick = args.quick === true
  const p = {
    sockets: Number(args.sockets ?? (quick ? 200 : 1000)),
    sessions: Number(args.sessions ?? (quick ? 2 : 10)),
    rounds: Number(args.rounds ?? (quick ? 1 : 3)),
    window: Number(args.window ?? 8),
    warmup: quick ? 0.5 : 1.5,
    duration: Number(args.duration ?? (quick ? 1 : 4))
  }
  const pin = args['no-pin'] !== true && hasTaskset()
  if (pin) execFileSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' })
  const runs = { h1: [], h2: [] }
  for (let round = 0; round < p.rounds; round++) {
    const order = round % 2 === 0 ? ['h2', 'h1'] : ['h1', 'h2']
    for (const mode of order) {
      const r = await measure(mode, p, pin)
      runs[mode].push(r)
      process.stderr.write(`round ${round + 1} ${mode}: ${JSON.stringify(r)}\n`)
    }
  }
  const keys = ['rssPerSocket', 'heapPerSocket', 'opensPerSec', 'msgPerSec', 'serverCpuPerMsgMicros', 'serverCpuPercent']
  const summary = {}
  for (const mode of ['h1', 'h2']) summary[mode] = Object.fromEntries(keys.map((k) => [k, median(runs[mode].map((r) => r[k]))]))
  const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
  const row = (label, k, d, unit) => `| ${label} | ${fmt(summary.h1[k], d)} ${unit} | ${fmt(summary.h2[k], d)} ${unit} | ${fmt(summary.h2[k] / summary.h1[k], 2)}x |`
  console.log([
    `${p.sockets} WebSockets: HTTP/1.1 (${p.sockets} TCP connections) vs HTTP/2 (${p.sessions} sessions, ${p.sockets / p.sessions} streams each); ` +
      `median of ${p.rounds} round(s); echo: ${p.window} x 32-byte messages in flight per socket, ${p.duration}s; ${pin ? 'server on core 0, load generator on core 1' : 'not pinned'}`,
    '',
    '| metric | HTTP/1.1 | HTTP/2 (RFC 8441) | HTTP/2 / HTTP/1.1 |',
    '|---|---|---|---|',
    row('server RSS per WebSocket', 'rssPerSocket', 0, 'B'),
    row('server V8 heap per WebSocket', 'heapPerSocket', 0, 'B'),
    row('WebSocket opens per second', 'opensPerSec', 0, '/s'),
    row('32-byte echo', 'msgPerSec', 0, 'msg/s'),
    row('server CPU per echoed message', 'serverCpuPerMsgMicros', 2, 'µs'),
    row('server CPU during echo', 'serverCpuPercent', 0, '%')
  ].join('\n'))
  const result = {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    build: gitRevision(),
    params: p,
    pinned: pin,
    summary,
    runs
  }
  console.log('RESULT ' + JSON.stringify(result))
  // A full run (default parameters) is kept next to results.json; a quick or custom one is not.
  if (!quick && args.sockets === undefined && args.sessions === undefined && args.rounds === undefined) {
    const out = join(dirname(HERE), 'http2-results.json')
    writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
    process.stderr.write(`wrote ${out}\n`)
  }
}

function gitRevision () {
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: dirname(HERE), encoding: 'utf8' }).trim()
  } catch {
    return 'unknown'
  }
}

// Last, once every constant above is initialised.
if (args.serve !== undefined) await serve(String(args.serve), String(args.dist ?? '../dist/lib/index.js'))
else await main()
