/**
 * Streaming UTF-8 validation: compared with a reference automaton written from
 * the RFC 3629 table, the stream must fail on exactly the chunk holding the
 * first byte that makes the input impossible, never earlier, never later.
 */
import t from 'tap'
import { Utf8Stream } from '../../lib/protocol/utf8.js'

/** Index of the first byte after which `bytes` cannot be a prefix of valid UTF-8; -1 when none. `complete` says it ends on a boundary. */
function reference (bytes: Uint8Array): { bad: number, complete: boolean } {
  let need = 0
  let lo = 0x80
  let hi = 0xbf
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!
    if (need === 0) {
      if (b < 0x80) continue
      if (b >= 0xc2 && b <= 0xdf) { need = 1; lo = 0x80; hi = 0xbf; continue }
      if (b === 0xe0) { need = 2; lo = 0xa0; hi = 0xbf; continue }
      if ((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) { need = 2; lo = 0x80; hi = 0xbf; continue }
      if (b === 0xed) { need = 2; lo = 0x80; hi = 0x9f; continue }
      if (b === 0xf0) { need = 3; lo = 0x90; hi = 0xbf; continue }
      if (b >= 0xf1 && b <= 0xf3) { need = 3; lo = 0x80; hi = 0xbf; continue }
      if (b === 0xf4) { need = 3; lo = 0x80; hi = 0x8f; continue }
      return { bad: i, complete: false }
    }
    if (b < lo || b > hi) return { bad: i, complete: false }
    lo = 0x80
    hi = 0xbf
    need--
  }
  return { bad: -1, complete: need === 0 }
}

/** Feed `bytes` cut at `cuts`; returns the index of the chunk whose write() returned false (-1 none) and end(). */
function feed (bytes: Buffer, cuts: number[]): { failedChunk: number, chunkEnds: number[], end: boolean | null } {
  const s = new Utf8Stream()
  const bounds = [0, ...cuts, bytes.length]
  const chunkEnds: number[] = []
  for (let i = 0; i + 1 < bounds.length; i++) {
    chunkEnds.push(bounds[i + 1]!)
    // Write from a larger buffer with an offset, as the receiver does.
    const host = Buffer.concat([Buffer.from([0x41, 0xff]), bytes.subarray(bounds[i], bounds[i + 1]), Buffer.from([0xff])])
    if (!s.write(host, 2, host.length - 1)) return { failedChunk: i, chunkEnds, end: null }
  }
  return { failedChunk: -1, chunkEnds, end: s.end() }
}

function expectFeed (t: { equal (a: unknown, b: unknown, m: string): boolean }, bytes: Buffer, cuts: number[], label: string): void {
  const ref = reference(bytes)
  const got = feed(bytes, cuts)
  if (ref.bad === -1) {
    t.equal(got.failedChunk, -1, `${label}: no chunk fails`)
    t.equal(got.end, ref.complete, `${label}: end() is ${ref.complete}`)
  } else {
    // The chunk that contains byte `bad` must be the one that fails.
    const bounds = [0, ...cuts, bytes.length]
    let chunk = 0
    while (!(ref.bad >= bounds[chunk]! && ref.bad < bounds[chunk + 1]!)) chunk++
    t.equal(got.failedChunk, chunk, `${label}: fails on chunk ${chunk} (byte ${ref.bad})`)
  }
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/ /g, ''), 'hex')

const CASES: Array<[string, Buffer]> = [
  ['ASCII', Buffer.from('Hello, world')],
  ['mixed scripts', Buffer.from('κόσμε — 日本語 — 𝄞𝄢 — ☃')],
  ['boundary code points', Buffer.from('\u{0}\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}\u{D7FF}\u{E000}\u{FFFD}')],
  ['overlong C0 80', hex('41 c0 80 41')],
  ['overlong E0 80 80', hex('41 e0 80 80')],
  ['overlong E0 9F BF', hex('e0 9f bf')],
  ['overlong F0 8F BF BF', hex('f0 8f bf bf')],
  ['surrogate ED A0 80', hex('61 ed a0 80 62')],
  ['surrogate ED BF BF', hex('ed bf bf')],
  ['above U+10FFFF F4 90 80 80', hex('f4 90 80 80')],
  ['F5 lead', hex('61 f5 80 80 80')],
  ['F8 lead', hex('f8 88 80 80 80')],
  ['FE', hex('fe')],
  ['FF', hex('61 62 ff')],
  ['stray continuation', hex('61 80')],
  ['continuation after a complete sequence', hex('c3 a9 a9')],
  ['lead then ASCII', hex('e2 82 41')],
  ['4-byte lead then 2 bytes then ASCII', hex('f0 9d 84 41')],
  ['truncated 2-byte at end', hex('61 c3')],
  ['truncated 3-byte at end', hex('61 e2 82')],
  ['truncated 4-byte at end', hex('61 f0 9d 84')],
  ['valid sequences back to back', hex('f0 9d 84 9e f4 8f bf bf e2 82 ac c3 a9')]
]

t.test('every classic case, cut at every position and every pair of positions', async (t) => {
  for (const [name, bytes] of CASES) {
    expectFeed(t, bytes, [], `${name}, whole`)
    for (let i = 1; i < bytes.length; i++) {
      expectFeed(t, bytes, [i], `${name}, cut at ${i}`)
      for (let j = i + 1; j < bytes.length; j++) expectFeed(t, bytes, [i, j], `${name}, cut at ${i} and ${j}`)
    }
    expectFeed(t, bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1), `${name}, byte by byte`)
  }
})

t.test('the reference agrees with buffer.isUtf8 on whole inputs', async (t) => {
  const { isUtf8 } = await import('node:buffer')
  for (const [name, bytes] of CASES) {
    const ref = reference(bytes)
    t.equal(ref.bad === -1 && ref.complete, isUtf8(bytes), name)
  }
})

t.test('random inputs biased towards UTF-8 structure, random cuts', async (t) => {
  let seed = 99
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0
    return Math.floor((seed / 4294967296) * n)
  }
  const pool = [0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff]
  let mismatches = 0
  let runs = 0
  const collect = {
    equal (a: unknown, b: unknown): boolean {
      runs++
      if (a !== b) mismatches++
      return a === b
    }
  }
  for (let k = 0; k < 20000; k++) {
    const len = 1 + rnd(12)
    const bytes = Buffer.alloc(len)
    for (let i = 0; i < len; i++) bytes[i] = pool[rnd(pool.length)]!
    const cuts: number[] = []
    for (let i = 1; i < len; i++) if (rnd(3) === 0) cuts.push(i)
    expectFeed(collect, bytes, cuts, 'random')
  }
  t.equal(mismatches, 0, `${runs} checks agree with the reference`)
})

t.test('reset() forgets an incomplete sequence; end() resets too', async (t) => {
  const s = new Utf8Stream()
  t.ok(s.write(hex('e2 82'), 0, 2))
  s.reset()
  t.ok(s.write(Buffer.from('a'), 0, 1), 'a fresh message starts clean')
  t.ok(s.end())
  t.ok(s.write(hex('f0 9d'), 0, 2))
  t.notOk(s.end(), 'incomplete at end')
  t.ok(s.write(Buffer.from('ok'), 0, 2), 'after end() the stream is clean')
  t.ok(s.end())
  t.ok(s.write(Buffer.alloc(0), 0, 0), 'an empty write is fine')
})
