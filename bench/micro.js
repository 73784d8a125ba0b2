// Micro-benchmarks of the frame parser (Receiver) and frame writer (Sender) alone, against
// ws's internal Receiver and Sender. No sockets: the parser is fed from memory and the
// writer writes into a counting stub.
//
//   node bench/micro.js            (~1 minute)
//   node bench/micro.js --quick    (~15 s)
//   flags: --only=parse|write, --rounds=N, --ms=N (time per measurement)
//
// Needs `npm run build` (imports ../dist/lib/protocol/receiver.js and ../dist/lib/protocol/sender.js).
// Writes bench/micro-results.json (or bench/.tmp/micro-results.json with --quick); run.js
// folds the file into RESULTS.md when it is present.
import { createRequire } from 'node:module'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { randomBytes } from 'node:crypto'
import { cpus } from 'node:os'

const HERE = dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)

const args = process.argv.slice(2)
const flag = (name, dflt) => {
  const a = args.find((x) => x === `--${name}` || x.startsWith(`--${name}=`))
  if (!a) return dflt
  const v = a.split('=')[1]
  return v === undefined ? true : v
}
const QUICK = flag('quick', false) === true
const ROUNDS = Number(flag('rounds', QUICK ? 3 : 7))
const MS = Number(flag('ms', QUICK ? 150 : 400))
const ONLY = flag('only', null)

// ---------------------------------------------------------------------------------------------
// Load both implementations

const receiverPath = join(HERE, '..', 'dist', 'lib', 'protocol', 'receiver.js')
const senderPath = join(HERE, '..', 'dist', 'lib', 'protocol', 'sender.js')
if (!existsSync(receiverPath) || !existsSync(senderPath)) {
  process.stderr.write(
    'micro.js: dist/lib/protocol/receiver.js or dist/lib/protocol/sender.js is missing.\n' +
    'Build the plugin first (`npm run build`); this benchmark drives the compiled Receiver and Sender.\n')
  process.exit(2)
}
const { Receiver } = await import(pathToFileURL(receiverPath).href)
const { Sender, encodeFrame } = await import(pathToFileURL(senderPath).href)
if (typeof Receiver !== 'function' || typeof Sender !== 'function') {
  process.stderr.write('micro.js: dist/lib/protocol/receiver.js must export class Receiver and dist/lib/protocol/sender.js class Sender\n')
  process.exit(2)
}
// ws does not export its internals; load them by file path next to its entry point.
const wsDir = dirname(require.resolve('ws'))
const WsReceiver = require(join(wsDir, 'lib', 'receiver.js'))
const WsSender = require(join(wsDir, 'lib', 'sender.js'))

// ---------------------------------------------------------------------------------------------
// Inputs

const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d])

function maskedFrame (opcode, payload) {
  const len = payload.length
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8
  const f = Buffer.allocUnsafe(2 + ext + 4 + len)
  f[0] = 0x80 | opcode
  let o = 2
  if (ext === 0) f[1] = 0x80 | len
  else if (ext === 2) { f[1] = 0x80 | 126; f.writeUInt16BE(len, 2); o = 4 } else {
    f[1] = 0x80 | 127; f.writeUInt32BE(0, 2); f.writeUInt32BE(len, 6); o = 10
  }
  MASK.copy(f, o)
  o += 4
  for (let i = 0; i < len; i++) f[o + i] = payload[i] ^ MASK[i & 3]
  return f
}

const TEXT32 = Buffer.from('0123456789abcdef0123456789abcdef')
const TEXT1K = Buffer.from('x'.repeat(1024))
const BIN64K = randomBytes(64 * 1024)

/**
 * A parse case: `template` is the wire bytes of `frames` frames, delivered in `chunk`-byte
 * pieces. Both parsers unmask in place, so every iteration first copies the template into a
 * work buffer (the same memcpy for both; the "copy only" row shows what it costs).
 */
const PARSE_CASES = [
  { name: '32 B text x1024, one chunk', template: Buffer.concat(Array(1024).fill(maskedFrame(1, TEXT32))), frames: 1024, chunk: Infinity },
  { name: '32 B text x1024, 1460 B chunks', template: Buffer.concat(Array(1024).fill(maskedFrame(1, TEXT32))), frames: 1024, chunk: 1460 },
  { name: '1 KiB text x64, one chunk', template: Buffer.concat(Array(64).fill(maskedFrame(1, TEXT1K))), frames: 64, chunk: Infinity },
  { name: '64 KiB binary, one chunk', template: maskedFrame(2, BIN64K), frames: 1, chunk: Infinity },
  { name: '64 KiB binary, 16 KiB chunks', template: maskedFrame(2, BIN64K), frames: 1, chunk: 16 * 1024 }
]

function splitView (buf, size) {
  if (!Number.isFinite(size)) return [buf]
  const parts = []
  for (let o = 0; o < buf.length; o += size) parts.push(buf.subarray(o, Math.min(buf.length, o + size)))
  return parts
}

// ---------------------------------------------------------------------------------------------
// Parsers under test: each factory returns { push(chunk), count() }

function pluginParser () {
  let messages = 0
  const host = {
    onMessage () { messages++ },
    onPing () {},
    onPong () {},
    onCloseFrame () { throw new Error('unexpected close frame') },
    onProtocolError (closeCode, code, message) { throw new Error(`plugin receiver: ${code} ${message}`) }
  }
  const r = new Receiver(host, { isServer: true, maxPayload: 100 * 1024 * 1024 })
  return { push: (c) => r.push(c), count: () => messages }
}

function wsParser () {
  let messages = 0
  const r = new WsReceiver({ isServer: true, maxPayload: 100 * 1024 * 1024, allowSynchronousEvents: true })
  r.on('message', () => { messages++ })
  r.on('error', (err) => { throw err })
  const noop = () => {}
  // _write is what Writable#write ends up calling; calling it directly leaves out the stream
  // machinery so that only the parser is compared.
  return { push: (c) => r._write(c, 'buffer', noop), count: () => messages }
}

function copyOnly () {
  return { push: () => {}, count: () => 0 }
}

function runParse (factory, c, ms) {
  const p = factory()
  const work = Buffer.allocUnsafe(c.template.length)
  const parts = splitView(work, c.chunk)
  let iterations = 0
  const t0 = performance.now()
  let now = t0
  while (now - t0 < ms) {
    for (let k = 0; k < 8; k++) {
      c.template.copy(work)
      for (let i = 0; i < parts.length; i++) p.push(parts[i])
    }
    iterations += 8
    now = performance.now()
  }
  const expected = iterations * c.frames
  if (factory !== copyOnly && p.count() !== expected) throw new Error(`${factory.name}: ${p.count()} messages, expected ${expected}`)
  return expected / ((now - t0) / 1000)
}

// ---------------------------------------------------------------------------------------------
// Writers under test

class CountingSocket {
  constructor () { this.bytes = 0; this.writes = 0 }
  write (b, cb) { this.bytes += b.length; this.writes++; if (typeof cb === 'function') cb(); return true }
  cork () {}
  uncork () {}
}

const WRITE_CASES = [
  { name: 'send 32 B text (Buffer)', payload: TEXT32, binary: false },
  { name: 'send 1 KiB text (Buffer)', payload: TEXT1K, binary: false },
  { name: 'send 64 KiB binary', payload: BIN64K, binary: true },
  { name: 'encode 32 B frame once (publish)', payload: TEXT32, binary: false, encodeOnly: true }
]

function pluginWriter (c) {
  const sock = new CountingSocket()
  if (c.encodeOnly) {
    if (typeof encodeFrame !== 'function') return null
    return { op: () => { sock.write(encodeFrame(1, c.payload)) }, sock }
  }
  const s = new Sender(sock, false)
  const opcode = c.binary ? 2 : 1
  return { op: () => s.sendMessage(opcode, c.payload), sock }
}

function wsWriter (c) {
  const sock = new CountingSocket()
  if (c.encodeOnly) {
    const opts = { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }
    return { op: () => { for (const b of WsSender.frame(c.payload, opts)) sock.write(b) }, sock }
  }
  const s = new WsSender(sock, {})
  const opts = { binary: c.binary, fin: true, mask: false, compress: false }
  return { op: () => s.send(c.payload, opts), sock }
}

function runWrite (factory, c, ms) {
  const w = factory(c)
  if (w === null) return NaN
  let ops = 0
  const t0 = performance.now()
  let now = t0
  while (now - t0 < ms) {
    for (let k = 0; k < 256; k++) w.op()
    ops += 256
    now = performance.now()
  }
  const hdr = c.payload.length < 126 ? 2 : c.payload.length < 65536 ? 4 : 10
  if (w.sock.bytes !== ops * (hdr + c.payload.length)) throw new Error(`${factory.name}: wrote ${w.sock.bytes} bytes for ${ops} frames`)
  return ops / ((now - t0) / 1000)
}

// ---------------------------------------------------------------------------------------------

function median (xs) {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

function fmt (v) {
  if (!Number.isFinite(v)) return '–'
  if (v >= 1e6) return (v / 1e6).toFixed(2) + 'M'
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k'
  return v.toFixed(0)
}

function bench (kind, cases, impls, fn) {
  const rows = []
  for (const c of cases) {
    // Warm up every implementation, then alternate them round by round.
    for (const impl of impls) fn(impl.factory, c, Math.min(100, MS))
    const samples = Object.fromEntries(impls.map((i) => [i.name, []]))
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 ? [...impls].reverse() : impls
      for (const impl of order) samples[impl.name].push(fn(impl.factory, c, MS))
    }
    const row = { kind, case: c.name, opsPerSec: {}, min: {}, max: {} }
    for (const impl of impls) {
      row.opsPerSec[impl.name] = median(samples[impl.name])
      row.min[impl.name] = Math.min(...samples[impl.name])
      row.max[impl.name] = Math.max(...samples[impl.name])
    }
    row.ratio = row.opsPerSec.plugin / row.opsPerSec.ws
    rows.push(row)
    const cells = impls.map((i) => `${i.name} ${fmt(row.opsPerSec[i.name])}/s`).join('  ')
    process.stdout.write(`${kind.padEnd(5)} ${c.name.padEnd(34)} ${cells}  plugin/ws ${Number.isFinite(row.ratio) ? row.ratio.toFixed(2) : '–'}\n`)
  }
  return rows
}

const rows = []
process.stdout.write(`micro-benchmarks: ${ROUNDS} rounds x ${MS} ms per measurement, median ops/s (parse: frames/s, write: frames/s)\n`)
if (!ONLY || ONLY === 'parse') {
  rows.push(...bench('parse', PARSE_CASES, [
    { name: 'plugin', factory: pluginParser },
    { name: 'ws', factory: wsParser },
    { name: 'copy-only', factory: copyOnly }
  ], runParse))
}
if (!ONLY || ONLY === 'write') {
  rows.push(...bench('write', WRITE_CASES, [
    { name: 'plugin', factory: pluginWriter },
    { name: 'ws', factory: wsWriter }
  ], runWrite))
}

const outDir = QUICK ? join(HERE, '.tmp') : HERE
mkdirSync(outDir, { recursive: true })
const file = join(outDir, 'micro-results.json')
writeFileSync(file, JSON.stringify({
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model,
  rounds: ROUNDS,
  msPerMeasurement: MS,
  note: 'parse rows include one memcpy of the input per iteration for every implementation (see copy-only); ws Receiver is driven through _write (no stream overhead); ws runs without bufferutil/utf-8-validate',
  rows
}, null, 2) + '\n')
process.stdout.write(`wrote ${file}\n`)
