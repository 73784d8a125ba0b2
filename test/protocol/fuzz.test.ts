// Fuzzing the frame parser (lib/receiver.ts) in both roles with a seeded PRNG: valid streams (exact outcome
// expected), mutated streams, structured random frames and pure noise, each fed in several chunkings.
// Properties: no exception escapes push(); every outcome is a message, ping, pong, a Close with a valid code, a
// protocol error with 1002/1007/1009, or nothing; nothing follows a Close or an error; text is valid UTF-8; no
// message exceeds maxPayload; and the outcome does not depend on how the bytes were chunked.
// Bounded in count and in time: FST_WS_FUZZ_ITERATIONS and FST_WS_FUZZ_SEED override (scripts/soak.js).
import t, { type Test } from 'tap'
import { isUtf8 } from 'node:buffer'
import { deflateRawSync, constants as zlib } from 'node:zlib'
import { Receiver, type ReceiverHost } from '../../lib/protocol/receiver.js'
import type { ClosingError } from '../../lib/protocol/closing-error.js'
import { PerMessageDeflate } from '../../lib/extensions/permessage-deflate/codec.js'
import { validateDeflateOptions } from '../../lib/plugin/options.js'
import { isValidReceivedCloseCode } from '../../lib/protocol/close-codes.js'
import { envInt, within, frame } from '../helpers/index.js'

const SEED = envInt('FST_WS_FUZZ_SEED', 0x6455)
const ITERATIONS = envInt('FST_WS_FUZZ_ITERATIONS', 1500)
/** Wall-clock budget per fuzz loop: stop early (and say so) rather than slow down a loaded CI machine. */
const BUDGET_MS = envInt('FST_WS_FUZZ_BUDGET_MS', 3000)
const MAX_PAYLOAD = 4096

/** xoshiro128**: small, fast, and reproducible from one 32-bit seed (expanded with splitmix32). */
class Rng {
  private s0: number
  private s1: number
  private s2: number
  private s3: number
  constructor (seed: number) {
    let x = seed >>> 0
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0
      let z = x
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
      return (z ^ (z >>> 16)) >>> 0
    }
    this.s0 = next()
    this.s1 = next()
    this.s2 = next()
    this.s3 = next()
  }

  u32 (): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0
    const t = (this.s1 << 9) >>> 0
    this.s2 ^= this.s0
    this.s3 ^= this.s1
    this.s1 ^= this.s2
    this.s0 ^= this.s3
    this.s2 ^= t
    this.s3 = rotl(this.s3, 11)
    return result
  }

  /** Integer in [0, n). */
  int (n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n)
  }

  chance (p: number): boolean {
    return this.u32() / 0x100000000 < p
  }

  pick<T> (items: readonly T[]): T {
    return items[this.int(items.length)]!
  }

  bytes (n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff
    return b
  }
}

function rotl (x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}

// ---- frame encoding: the shared test encoder (independent of lib/), mask keys from the seeded generator ----
interface Spec {
  opcode: number
  payload: Buffer
  fin: boolean
  rsv: number
  masked: boolean
  /** Override the encoded length (structured fuzz): [lengthCode, extended value]. */
  length?: [number, bigint]
}

function encode (spec: Spec, rng: Rng): Buffer {
  const [lengthCode, extendedLength] = spec.length ?? [undefined, undefined]
  return frame(spec.opcode, spec.payload, {
    fin: spec.fin,
    rsv1: (spec.rsv & 4) !== 0,
    rsv2: (spec.rsv & 2) !== 0,
    rsv3: (spec.rsv & 1) !== 0,
    mask: spec.masked ? rng.bytes(4) : false,
    lengthCode,
    extendedLength
  })
}

const TEXT_PIECES = ['a', 'hello', ' ', 'é', '€', '😀', 'ß', '\u0000', '中文', '\u{10FFFF}', '\u07FF', '\uFFFD']

function randomText (rng: Rng, maxBytes: number): Buffer {
  let s = ''
  const target = rng.int(maxBytes + 1)
  while (Buffer.byteLength(s) < target) s += rng.pick(TEXT_PIECES)
  let b = Buffer.from(s)
  // Keep it whole characters and under the target.
  while (b.length > maxBytes) {
    s = s.slice(0, -1)
    if (s.length > 0 && /[\uD800-\uDBFF]$/.test(s)) s = s.slice(0, -1)
    b = Buffer.from(s)
  }
  return b
}

type Outcome = string

/** The events one stream produces, as strings (comparable across chunkings). */
class Recorder implements ReceiverHost {
  events: Outcome[] = []
  violations: string[] = []
  terminal = false
  private note (e: Outcome): void {
    if (this.terminal) this.violations.push(`event after the connection ended: ${e}`)
    this.events.push(e)
  }

  onMessage (data: Buffer, isBinary: boolean): void {
    if (data.length > MAX_PAYLOAD) this.violations.push(`message of ${data.length} bytes over maxPayload`)
    if (!isBinary && !isUtf8(data)) this.violations.push('text message with invalid UTF-8')
    this.note(`${isBinary ? 'binary' : 'text'} ${data.toString('hex')}`)
  }

  onPing (data: Buffer): void {
    if (data.length > 125) this.violations.push('ping over 125 bytes')
    this.note(`ping ${data.toString('hex')}`)
  }

  onPong (data: Buffer): void {
    if (data.length > 125) this.violations.push('pong over 125 bytes')
    this.note(`pong ${data.toString('hex')}`)
  }

  onCloseFrame (code: number, reason: string): void {
    if (code !== 1005 && !isValidReceivedCloseCode(code)) this.violations.push(`close frame with invalid code ${code}`)
    if (Buffer.byteLength(reason) > 123) this.violations.push('close reason over 123 bytes')
    this.note(`close ${code} ${reason}`)
    this.terminal = true
  }

  onBacklog (): void {}

  onProtocolError (err: ClosingError): void {
    const { closeCode, code } = err
    if (![1002, 1007, 1009].includes(closeCode)) this.violations.push(`protocol error with close code ${closeCode}`)
    if (!/^FST_WS_/.test(code)) this.violations.push(`protocol error with code ${code}`)
    this.note(`error ${closeCode}`)
    this.terminal = true
  }
}

/** Split `bytes` into chunks: 'whole', 'bytes' (one at a time) or 'random'. */
function chunkings (bytes: Buffer, rng: Rng): Buffer[][] {
  const random: Buffer[] = []
  for (let off = 0; off < bytes.length;) {
    const n = 1 + rng.int(rng.chance(0.5) ? 8 : 200)
    random.push(bytes.subarray(off, off + n))
    off += n
  }
  const out: Buffer[][] = [[bytes], random]
  if (bytes.length <= 2048) out.push(Array.from(bytes, (_, i) => bytes.subarray(i, i + 1)))
  return out
}

interface Run { events: Outcome[], violations: string[] }

function feed (isServer: boolean, chunks: Buffer[]): Run {
  const rec = new Recorder()
  const r = new Receiver(rec, { isServer, maxPayload: MAX_PAYLOAD })
  try {
    // Copies: the receiver unmasks in place.
    for (const c of chunks) r.push(Buffer.from(c))
    // After the end, more bytes must be ignored.
    if (rec.terminal) r.push(Buffer.from([0x81, 0x80, 0, 0, 0, 0]))
  } catch (err) {
    rec.violations.push(`push threw: ${(err as Error).stack ?? String(err)}`)
  }
  return { events: rec.events, violations: rec.violations }
}

/** A valid stream: messages (maybe fragmented, with control frames between fragments), maybe a final Close. */
function validStream (rng: Rng, isServer: boolean): { bytes: Buffer, expected: Outcome[] } {
  const frames: Buffer[] = []
  const expected: Outcome[] = []
  const masked = isServer
  const control = (): void => {
    const opcode = rng.pick([0x9, 0xa])
    const payload = rng.bytes(rng.int(rng.chance(0.1) ? 126 : 10))
    frames.push(encode({ opcode, payload, fin: true, rsv: 0, masked }, rng))
    expected.push(`${opcode === 0x9 ? 'ping' : 'pong'} ${payload.toString('hex')}`)
  }
  const messages = rng.int(6)
  for (let m = 0; m < messages; m++) {
    if (rng.chance(0.2)) control()
    const binary = rng.chance(0.5)
    const size = rng.chance(0.1) ? MAX_PAYLOAD : rng.int(rng.chance(0.2) ? MAX_PAYLOAD : 300)
    const payload = binary ? rng.bytes(size) : randomText(rng, size)
    const pieces = rng.chance(0.5) ? 1 : 1 + rng.int(6)
    const cuts = [0]
    for (let i = 1; i < pieces; i++) cuts.push(rng.int(payload.length + 1))
    cuts.push(payload.length)
    cuts.sort((a, b) => a - b)
    for (let i = 0; i < pieces; i++) {
      // Fragments may split a UTF-8 sequence anywhere: the parser must only judge the whole message.
      frames.push(encode({ opcode: i === 0 ? (binary ? 0x2 : 0x1) : 0x0, payload: payload.subarray(cuts[i], cuts[i + 1]), fin: i === pieces - 1, rsv: 0, masked }, rng))
      if (i < pieces - 1 && rng.chance(0.2)) control()
    }
    expected.push(`${binary ? 'binary' : 'text'} ${payload.toString('hex')}`)
  }
  if (rng.chance(0.5)) {
    const code = rng.pick([1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999])
    const reason = randomText(rng, 40)
    const payload = rng.chance(0.2) ? Buffer.alloc(0) : Buffer.concat([Buffer.from([code >> 8, code & 0xff]), reason])
    frames.push(encode({ opcode: 0x8, payload, fin: true, rsv: 0, masked }, rng))
    expected.push(payload.length === 0 ? 'close 1005 ' : `close ${code} ${reason.toString()}`)
  }
  return { bytes: Buffer.concat(frames), expected }
}

function mutate (bytes: Buffer, rng: Rng): Buffer {
  let b = Buffer.from(bytes)
  const count = 1 + rng.int(4)
  for (let i = 0; i < count; i++) {
    const op = rng.int(7)
    const pos = b.length === 0 ? 0 : rng.int(b.length)
    if (op === 0 && b.length > 0) b[pos] = b[pos]! ^ (1 << rng.int(8)) // flip a bit
    else if (op === 1 && b.length > 0) b[pos] = rng.u32() & 0xff // replace a byte
    else if (op === 2) b = Buffer.concat([b.subarray(0, pos), rng.bytes(1 + rng.int(8)), b.subarray(pos)]) // insert
    else if (op === 3) b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + 1 + rng.int(8))]) // delete
    else if (op === 4) b = b.subarray(0, pos) // truncate
    else if (op === 5 && b.length > 0) b[pos] = rng.pick([0x00, 0x7e, 0x7f, 0x80, 0xff, 0xfe, 0x88, 0x89, 0x8a, 0x0f]) // interesting byte
    else if (op === 6) { // duplicate a segment
      const len = rng.int(32)
      b = Buffer.concat([b.subarray(0, pos), b.subarray(pos, pos + len), b.subarray(pos)])
    }
  }
  return b
}

/** Frames with random header fields: any opcode, RSV bits, mask bit, and length fields (126/127 with odd values). */
function structuredStream (rng: Rng, isServer: boolean): Buffer {
  const frames: Buffer[] = []
  const n = 1 + rng.int(5)
  for (let i = 0; i < n; i++) {
    const opcode = rng.chance(0.7) ? rng.pick([0x0, 0x1, 0x2, 0x8, 0x9, 0xa]) : rng.int(16)
    const payload = opcode === 0x1 && rng.chance(0.5) ? randomText(rng, 200) : rng.bytes(rng.int(rng.chance(0.1) ? 300 : 130))
    const spec: Spec = {
      opcode,
      payload,
      fin: rng.chance(0.7),
      rsv: rng.chance(0.85) ? 0 : rng.int(8),
      masked: rng.chance(0.9) ? isServer : !isServer
    }
    if (rng.chance(0.15)) {
      spec.length = rng.pick<[number, bigint]>([
        [126, BigInt(payload.length)], [127, BigInt(payload.length)], [126, 65535n], [127, 2n ** 62n], [127, 2n ** 63n],
        [127, 2n ** 64n - 1n], [127, BigInt(MAX_PAYLOAD + 1)], [125, 125n], [rng.int(126), 0n]
      ])
    }
    if (opcode === 0x8 && rng.chance(0.7)) {
      const code = rng.pick([0, 999, 1000, 1004, 1005, 1006, 1012, 1015, 1016, 2999, 3000, 4999, 5000, 65535])
      spec.payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), rng.chance(0.3) ? Buffer.from([0xc3]) : randomText(rng, 20)])
    }
    frames.push(encode(spec, rng))
  }
  return Buffer.concat(frames)
}

function check (t: Test, label: string, bytes: Buffer, isServer: boolean, rng: Rng, expected?: Outcome[]): boolean {
  const runs = chunkings(bytes, rng).map((chunks) => feed(isServer, chunks))
  const first = runs[0]!
  for (const run of runs) {
    if (run.violations.length > 0) {
      t.fail(`${label}: ${run.violations[0]}`, { bytes: bytes.toString('hex').slice(0, 400) })
      return false
    }
    if (JSON.stringify(run.events) !== JSON.stringify(first.events)) {
      t.fail(`${label}: the outcome depends on chunking`, { whole: first.events, chunked: run.events, bytes: bytes.toString('hex').slice(0, 400) })
      return false
    }
  }
  if (expected !== undefined && JSON.stringify(first.events) !== JSON.stringify(expected)) {
    t.fail(`${label}: a valid stream was not parsed as sent`, { expected, got: first.events })
    return false
  }
  return true
}

function fuzzLoop (t: Test, name: string, body: (rng: Rng, i: number, isServer: boolean) => boolean): void {
  for (const isServer of [true, false]) {
    const role = isServer ? 'server' : 'client'
    const rng = new Rng(SEED ^ (isServer ? 0x1234 : 0x4321) ^ hash(name))
    const started = Date.now()
    let i = 0
    let failures = 0
    for (; i < ITERATIONS; i++) {
      if (Date.now() - started > BUDGET_MS) break
      if (!body(rng, i, isServer)) failures++
      if (failures >= 5) break
    }
    t.equal(failures, 0, `${name}, ${role} role: ${i} streams, seed 0x${SEED.toString(16)}${i < ITERATIONS && failures === 0 ? ' (stopped at the time budget)' : ''}`)
    t.ok(i >= Math.min(ITERATIONS, 100), `${role} role: at least ${Math.min(ITERATIONS, 100)} streams ran`)
  }
}

function hash (s: string): number {
  let h = 0
  for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) >>> 0
  return h
}

t.test('the PRNG is deterministic', async (t) => {
  const a = new Rng(42)
  const b = new Rng(42)
  const xs = Array.from({ length: 8 }, () => a.u32())
  t.same(xs, Array.from({ length: 8 }, () => b.u32()))
  t.not(new Rng(43).u32(), xs[0])
})

t.test('valid streams are parsed exactly as sent, in any chunking', async (t) => {
  fuzzLoop(t, 'valid', (rng, i, isServer) => {
    const { bytes, expected } = validStream(rng, isServer)
    return check(t, `valid #${i}`, bytes, isServer, rng, expected)
  })
})

t.test('mutated valid streams: only valid outcomes, independent of chunking', async (t) => {
  fuzzLoop(t, 'mutated', (rng, i, isServer) => {
    const { bytes } = validStream(rng, isServer)
    return check(t, `mutated #${i}`, mutate(bytes, rng), isServer, rng)
  })
})

t.test('frames with random header fields: only valid outcomes, independent of chunking', async (t) => {
  fuzzLoop(t, 'structured', (rng, i, isServer) => check(t, `structured #${i}`, structuredStream(rng, isServer), isServer, rng))
})

t.test('random bytes: only valid outcomes, independent of chunking', async (t) => {
  fuzzLoop(t, 'noise', (rng, i, isServer) => check(t, `noise #${i}`, rng.bytes(rng.int(400)), isServer, rng))
})

t.test('a role mismatch always fails with 1002 on the first frame', async (t) => {
  const rng = new Rng(SEED)
  for (let i = 0; i < 200; i++) {
    for (const isServer of [true, false]) {
      const { bytes, expected } = validStream(rng, !isServer)
      const run = feed(isServer, [bytes])
      t.same(run.events, expected.length === 0 ? [] : ['error 1002'], `#${i}: masked frames to a client / unmasked to a server`)
    }
  }
})

/** Feed a server-role receiver with permessage-deflate and wait until it is idle. */
async function feedDeflate (chunks: Buffer[]): Promise<Run> {
  const rec = new Recorder()
  const params = { serverNoContextTakeover: false, clientNoContextTakeover: true, serverMaxWindowBits: 15, clientMaxWindowBits: 15 }
  const deflate = new PerMessageDeflate(params, 'server', validateDeflateOptions({}, 'perMessageDeflate'), MAX_PAYLOAD)
  const r = new Receiver(rec, { isServer: true, maxPayload: MAX_PAYLOAD, deflate })
  try {
    for (const c of chunks) r.push(Buffer.from(c))
  } catch (err) {
    rec.violations.push(`push threw: ${String(err)}`)
  }
  const state = r as unknown as { inflating: boolean, queued: Buffer[] }
  await within((async () => {
    while (state.inflating || (state.queued.length > 0 && !r.stopped)) await new Promise((resolve) => setTimeout(resolve, 1))
  })(), 2000, 'the receiver to finish inflating')
  deflate.close()
  return { events: rec.events, violations: rec.violations }
}

function compressedStream (rng: Rng): { bytes: Buffer, expected: Outcome[] } {
  const frames: Buffer[] = []
  const expected: Outcome[] = []
  const n = 1 + rng.int(4)
  for (let m = 0; m < n; m++) {
    const binary = rng.chance(0.5)
    const size = rng.chance(0.15) ? MAX_PAYLOAD * 4 : rng.int(600)
    const payload = binary ? Buffer.alloc(size, rng.int(256)) : randomText(rng, size)
    const compress = rng.chance(0.7)
    const data = compress ? deflateRawSync(payload, { finishFlush: zlib.Z_SYNC_FLUSH }).subarray(0, -4) : payload
    const pieces = rng.chance(0.5) ? 1 : 2 + rng.int(3)
    const step = Math.max(1, Math.ceil(data.length / pieces))
    for (let off = 0, i = 0; off < data.length || i === 0; off += step, i++) {
      const last = off + step >= data.length
      frames.push(encode({ opcode: i === 0 ? (binary ? 0x2 : 0x1) : 0x0, payload: data.subarray(off, off + step), fin: last, rsv: compress && i === 0 ? 4 : 0, masked: true }, rng))
      if (last) break
    }
    if (payload.length > MAX_PAYLOAD) {
      expected.push('error 1009')
      break
    }
    expected.push(`${binary ? 'binary' : 'text'} ${payload.toString('hex')}`)
  }
  return { bytes: Buffer.concat(frames), expected }
}

t.test('permessage-deflate (server role): valid compressed streams exactly, mutated ones only valid outcomes', async (t) => {
  const rng = new Rng(SEED ^ 0xdef1a7e)
  const started = Date.now()
  const rounds = Math.max(50, Math.floor(ITERATIONS / 5))
  let i = 0
  let failures = 0
  for (; i < rounds && Date.now() - started < BUDGET_MS && failures < 5; i++) {
    const { bytes, expected } = compressedStream(rng)
    const mutated = rng.chance(0.5)
    const input = mutated ? mutate(bytes, rng) : bytes
    const runs: Run[] = []
    for (const chunks of chunkings(input, rng).slice(0, 2)) runs.push(await feedDeflate(chunks))
    const label = `deflate #${i}${mutated ? ' (mutated)' : ''}`
    const bad = runs.find((r) => r.violations.length > 0)
    if (bad !== undefined) {
      failures++
      t.fail(`${label}: ${bad.violations[0]}`, { bytes: input.toString('hex').slice(0, 400) })
    } else if (JSON.stringify(runs[0]!.events) !== JSON.stringify(runs[1]!.events)) {
      failures++
      t.fail(`${label}: the outcome depends on chunking`, { whole: runs[0]!.events, chunked: runs[1]!.events })
    } else if (!mutated && JSON.stringify(runs[0]!.events) !== JSON.stringify(expected)) {
      failures++
      t.fail(`${label}: not parsed as sent`, { expected, got: runs[0]!.events })
    }
  }
  t.equal(failures, 0, `${i} compressed streams, seed 0x${SEED.toString(16)}`)
})
