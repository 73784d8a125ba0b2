/**
 * The frame parser against crafted bytes. Every case is fed whole, split in
 * two at every byte boundary, and one byte at a time, in both roles (server:
 * frames arrive masked; client: unmasked), and must produce exactly the same
 * host events each time.
 */
import t, { type Test } from 'tap'
import { Receiver } from '../../lib/protocol/receiver.js'
import {
  frame, frames as encode, FIXED_MASK, closePayload, describe, RecordingHost, type Event, type FrameSpec
} from '../helpers/index.js'

const TEXT = 0x1
const BINARY = 0x2
const CONT = 0x0
const CLOSE = 0x8
const PING = 0x9
const PONG = 0xa
const MiB = 1024 * 1024

type Role = 'server' | 'client'
const ROLES: Role[] = ['server', 'client']

interface CaseOptions {
  maxPayload?: number
  roles?: Role[]
}

/** Every way of cutting `bytes` the brief asks for; big inputs are cut everywhere near both ends and at a stride in between. */
function * feeds (bytes: Buffer): Generator<[string, Buffer[]]> {
  yield ['whole', [bytes]]
  const n = bytes.length
  const big = n > 4096
  for (let i = 1; i < n; i++) {
    if (big && i > 256 && i < n - 256 && i % 997 !== 0) continue
    yield [`split at ${i}`, [bytes.subarray(0, i), bytes.subarray(i)]]
  }
  if (n > 1) {
    const ones: Buffer[] = []
    for (let i = 0; i < n; i++) ones.push(bytes.subarray(i, i + 1))
    yield ['one byte at a time', ones]
  }
}

function runFeed (chunks: Buffer[], role: Role, maxPayload: number): Event[] {
  const host = new RecordingHost()
  const receiver = new Receiver(host, { isServer: role === 'server', maxPayload })
  // The receiver unmasks in place: give it copies so every feed sees the original bytes.
  for (const chunk of chunks) receiver.push(Buffer.from(chunk))
  return host.events
}

/** The mask of a role's incoming frames: client frames (server role) carry a fixed key, server frames none. */
function roleMask (masked: boolean): Buffer | false {
  return masked ? FIXED_MASK : false
}

function check (t: Test, name: string, build: (masked: boolean) => Buffer, expected: Event[], opts: CaseOptions = {}): void {
  const maxPayload = opts.maxPayload ?? 16 * MiB
  for (const role of opts.roles ?? ROLES) {
    const bytes = build(role === 'server')
    const whole = runFeed([bytes], role, maxPayload)
    t.same(whole, expected, `${name} (${role}, whole)`)
    const wrong: string[] = []
    let feeds_ = 0
    for (const [how, chunks] of feeds(bytes)) {
      feeds_++
      let events: Event[]
      try {
        events = runFeed(chunks, role, maxPayload)
      } catch (err) {
        wrong.push(`${how}: threw ${(err as Error).message}`)
        continue
      }
      if (JSON.stringify(events) !== JSON.stringify(expected)) wrong.push(`${how}: ${JSON.stringify(events)}`)
    }
    t.same(wrong.slice(0, 5), [], `${name} (${role}): same events in all ${feeds_} feeds`)
  }
}

function frames (specs: FrameSpec[]): (masked: boolean) => Buffer {
  return (masked) => encode(specs, { mask: roleMask(masked) })
}

function bytesOf (size: number, seed = 7): Buffer {
  const b = Buffer.alloc(size)
  let s = seed
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    b[i] = s >>> 24
  }
  return b
}

function textOf (size: number): string {
  let s = ''
  while (s.length < size) s += 'Hello, WebSocket! '
  return s.slice(0, size)
}

const msg = (data: Buffer | string, binary = false): Event =>
  ['message', describe(typeof data === 'string' ? Buffer.from(data) : data), binary]
const protocolError = (closeCode = 1002, code = 'FST_WS_PROTOCOL_ERROR'): Event => ['error', closeCode, code]
const utf8Error: Event = ['error', 1007, 'FST_WS_INVALID_UTF8']
const tooBig: Event = ['error', 1009, 'FST_WS_MESSAGE_TOO_BIG']


t.test('text and binary messages with 7-, 16- and 64-bit lengths', async (t) => {
  for (const size of [0, 1, 125, 126, 127, 65535, 65536, 70000]) {
    const text = textOf(size)
    check(t, `text of ${size} bytes`, frames([{ opcode: TEXT, payload: text }]), [msg(text)])
    const bin = bytesOf(size)
    check(t, `binary of ${size} bytes`, frames([{ opcode: BINARY, payload: bin }]), [msg(bin, true)])
  }
  // Lengths written in a longer form than needed still describe the payload exactly.
  check(t, '16-bit length field for 5 bytes', frames([{ opcode: TEXT, payload: 'hello', lengthCode: 126 }]), [msg('hello')])
  check(t, '64-bit length field for 5 bytes', frames([{ opcode: BINARY, payload: 'hello', lengthCode: 127 }]), [msg('hello', true)])
})

t.test('several frames in one stream, with control frames', async (t) => {
  check(t, 'text, ping, binary, pong', frames([
    { opcode: TEXT, payload: 'one' },
    { opcode: PING, payload: 'are you there' },
    { opcode: BINARY, payload: Buffer.from([0, 1, 2, 255]) },
    { opcode: PONG, payload: '' }
  ]), [msg('one'), ['ping', Buffer.from('are you there').toString('hex')], msg(Buffer.from([0, 1, 2, 255]), true), ['pong', '']])
  const big = bytesOf(125)
  check(t, 'ping and pong with 125-byte payloads', frames([{ opcode: PING, payload: big }, { opcode: PONG, payload: big }]),
    [['ping', describe(big)], ['pong', describe(big)]])
  check(t, 'empty ping', frames([{ opcode: PING }]), [['ping', '']])
  check(t, 'unsolicited pong is reported, nothing else', frames([{ opcode: PONG, payload: 'x' }, { opcode: TEXT, payload: 'after' }]),
    [['pong', '78'], msg('after')])
})

t.test('fragmented messages', async (t) => {
  check(t, 'text in three fragments', frames([
    { opcode: TEXT, payload: 'Hel', fin: false },
    { opcode: CONT, payload: 'lo, ', fin: false },
    { opcode: CONT, payload: 'world' }
  ]), [msg('Hello, world')])
  const bin = bytesOf(300)
  check(t, 'binary in fragments of 7-bit and 16-bit lengths', frames([
    { opcode: BINARY, payload: bin.subarray(0, 10), fin: false },
    { opcode: CONT, payload: bin.subarray(10, 290), fin: false },
    { opcode: CONT, payload: bin.subarray(290) }
  ]), [msg(bin, true)])
  check(t, 'pings interleaved between fragments', frames([
    { opcode: TEXT, payload: 'frag', fin: false },
    { opcode: PING, payload: 'p1' },
    { opcode: CONT, payload: 'ment', fin: false },
    { opcode: PONG, payload: 'p2' },
    { opcode: PING, payload: '' },
    { opcode: CONT, payload: 'ed' }
  ]), [['ping', '7031'], ['pong', '7032'], ['ping', ''], msg('fragmented')])
  check(t, 'empty fragments, empty first and last', frames([
    { opcode: TEXT, payload: '', fin: false },
    { opcode: CONT, payload: '', fin: false },
    { opcode: CONT, payload: 'x', fin: false },
    { opcode: CONT, payload: '' }
  ]), [msg('x')])
  check(t, 'a fragmented empty message', frames([
    { opcode: BINARY, fin: false },
    { opcode: CONT }
  ]), [msg('', true)])
  check(t, 'two fragmented messages in a row', frames([
    { opcode: TEXT, payload: 'a', fin: false },
    { opcode: CONT, payload: 'b' },
    { opcode: BINARY, payload: 'c', fin: false },
    { opcode: CONT, payload: 'd' }
  ]), [msg('ab'), msg('cd', true)])
  check(t, 'close between fragments ends it, no message', frames([
    { opcode: TEXT, payload: 'a', fin: false },
    { opcode: CLOSE, payload: closePayload(1000) },
    { opcode: CONT, payload: 'b' }
  ]), [['close', 1000, '']])
})

t.test('close frames', async (t) => {
  check(t, 'close without payload reports 1005', frames([{ opcode: CLOSE }]), [['close', 1005, '']])
  check(t, 'close with a code and a reason', frames([{ opcode: CLOSE, payload: closePayload(1000, 'bye ✓') }]),
    [['close', 1000, 'bye ✓']])
  check(t, 'close with a 123-byte reason', frames([{ opcode: CLOSE, payload: closePayload(4000, 'r'.repeat(123)) }]),
    [['close', 4000, 'r'.repeat(123)]])
  check(t, 'nothing is parsed after a close frame', frames([
    { opcode: CLOSE, payload: closePayload(1001) },
    { opcode: TEXT, payload: 'ignored' },
    { opcode: 0x3 }
  ]), [['close', 1001, '']])
  for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]) {
    check(t, `valid close code ${code}`, frames([{ opcode: CLOSE, payload: closePayload(code) }]), [['close', code, '']])
  }
  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]) {
    check(t, `invalid close code ${code}`, frames([{ opcode: CLOSE, payload: closePayload(code) }]), [protocolError()])
  }
  check(t, 'close payload of 1 byte', frames([{ opcode: CLOSE, payload: Buffer.from([0x03]) }]), [protocolError()])
  check(t, 'close reason with invalid UTF-8', frames([{ opcode: CLOSE, payload: closePayload(1000, Buffer.from([0x61, 0xed, 0xa0, 0x80])) }]),
    [utf8Error])
  check(t, 'close reason truncated mid-sequence', frames([{ opcode: CLOSE, payload: closePayload(1000, Buffer.from([0xe2, 0x82])) }]),
    [utf8Error])
})

t.test('protocol errors: 1002', async (t) => {
  check(t, 'ping with a 126-byte payload', frames([{ opcode: PING, payload: bytesOf(126) }]), [protocolError()])
  check(t, 'pong with a 64-bit length', frames([{ opcode: PONG, payload: bytesOf(3), lengthCode: 127 }]), [protocolError()])
  check(t, 'close with a 126-byte payload', frames([{ opcode: CLOSE, payload: closePayload(1000, 'x'.repeat(124)) }]), [protocolError()])
  check(t, 'fragmented ping', frames([{ opcode: PING, payload: 'a', fin: false }, { opcode: CONT, payload: 'b' }]), [protocolError()])
  check(t, 'fragmented close', frames([{ opcode: CLOSE, payload: closePayload(1000), fin: false }]), [protocolError()])
  check(t, 'fragmented ping inside a fragmented message', frames([
    { opcode: TEXT, payload: 'a', fin: false }, { opcode: PING, fin: false }, { opcode: CONT, payload: 'b' }
  ]), [protocolError()])
  for (const [bit, spec] of [['RSV1', { rsv1: true }], ['RSV2', { rsv2: true }], ['RSV3', { rsv3: true }]] as const) {
    check(t, `${bit} on a text frame without an extension`, frames([{ opcode: TEXT, payload: 'x', ...spec }]), [protocolError()])
    check(t, `${bit} on a ping`, frames([{ opcode: PING, ...spec }]), [protocolError()])
    check(t, `${bit} on a continuation`, frames([{ opcode: BINARY, payload: 'a', fin: false }, { opcode: CONT, payload: 'b', ...spec }]),
      [protocolError()])
  }
  check(t, 'all RSV bits after a valid message', frames([{ opcode: TEXT, payload: 'ok' }, { opcode: BINARY, rsv1: true, rsv2: true, rsv3: true }]),
    [msg('ok'), protocolError()])
  for (const opcode of [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
    check(t, `reserved opcode 0x${opcode.toString(16)}`, frames([{ opcode, payload: 'x' }]), [protocolError()])
    check(t, `reserved opcode 0x${opcode.toString(16)} inside a fragmented message`,
      frames([{ opcode: TEXT, payload: 'a', fin: false }, { opcode }]), [protocolError()])
  }
  check(t, 'continuation without a started message', frames([{ opcode: CONT, payload: 'x' }]), [protocolError()])
  check(t, 'continuation after a finished message', frames([{ opcode: TEXT, payload: 'a' }, { opcode: CONT, payload: 'x' }]),
    [msg('a'), protocolError()])
  check(t, 'text inside an open fragmented message', frames([{ opcode: TEXT, payload: 'a', fin: false }, { opcode: TEXT, payload: 'b' }]),
    [protocolError()])
  check(t, 'binary inside an open fragmented text message', frames([{ opcode: TEXT, payload: 'a', fin: false }, { opcode: BINARY, payload: 'b' }]),
    [protocolError()])
  check(t, 'unmasked client frame', frames([{ opcode: TEXT, payload: 'hi', mask: false }]), [protocolError()], { roles: ['server'] })
  check(t, 'unmasked client ping after a good frame', frames([{ opcode: TEXT, payload: 'a' }, { opcode: PING, mask: false }]),
    [msg('a'), protocolError()], { roles: ['server'] })
  check(t, 'masked server frame', frames([{ opcode: TEXT, payload: 'hi', mask: FIXED_MASK }]), [protocolError()], { roles: ['client'] })
  check(t, '64-bit length with the most significant bit set', frames([
    { opcode: BINARY, payload: 'abc', lengthCode: 127, extendedLength: 0x8000000000000003n }
  ]), [protocolError()])
  check(t, '64-bit length of 2^63 - 1 is too big (1009)', frames([
    { opcode: BINARY, payload: '', lengthCode: 127, extendedLength: 0x7fffffffffffffffn }
  ]), [tooBig])
})

t.test('UTF-8 validation: 1007', async (t) => {
  const invalid: Array<[string, number[]]> = [
    ['overlong 2-byte NUL (C0 80)', [0xc0, 0x80]],
    ['overlong 2-byte (C1 BF)', [0xc1, 0xbf]],
    ['overlong 3-byte (E0 80 AF)', [0xe0, 0x80, 0xaf]],
    ['overlong 3-byte (E0 9F BF)', [0xe0, 0x9f, 0xbf]],
    ['overlong 4-byte (F0 80 80 AF)', [0xf0, 0x80, 0x80, 0xaf]],
    ['overlong 4-byte (F0 8F BF BF)', [0xf0, 0x8f, 0xbf, 0xbf]],
    ['surrogate U+D800 (ED A0 80)', [0xed, 0xa0, 0x80]],
    ['surrogate U+DFFF (ED BF BF)', [0xed, 0xbf, 0xbf]],
    ['surrogate pair (ED A0 80 ED B0 80)', [0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80]],
    ['U+110000 (F4 90 80 80)', [0xf4, 0x90, 0x80, 0x80]],
    ['F5 lead byte', [0xf5, 0x80, 0x80, 0x80]],
    ['FE', [0xfe]],
    ['FF', [0xff]],
    ['stray continuation byte', [0x61, 0x80, 0x62]],
    ['two stray continuation bytes', [0xbf, 0xbf]],
    ['lead byte followed by ASCII', [0xc3, 0x41]],
    ['truncated 2-byte at the end', [0x61, 0xc3]],
    ['truncated 3-byte at the end', [0x61, 0xe2, 0x82]],
    ['truncated 4-byte at the end', [0x61, 0xf0, 0x9d, 0x84]],
    ['5-byte form (F8 88 80 80 80)', [0xf8, 0x88, 0x80, 0x80, 0x80]]
  ]
  for (const [name, bytes] of invalid) {
    const payload = Buffer.concat([Buffer.from('κόσμε '), Buffer.from(bytes), Buffer.from(' end')])
    const tail = Buffer.concat([Buffer.from('κόσμε '), Buffer.from(bytes)])
    check(t, `${name} in one frame`, frames([{ opcode: TEXT, payload }]), [utf8Error])
    check(t, `${name} at the very end of a frame`, frames([{ opcode: TEXT, payload: tail }]), [utf8Error])
    check(t, `${name} in the middle fragment of three`, frames([
      { opcode: TEXT, payload: 'ok ', fin: false },
      { opcode: CONT, payload: Buffer.from(bytes), fin: false },
      { opcode: CONT, payload: ' end' }
    ]), [utf8Error])
  }
  check(t, 'valid text then invalid text', frames([
    { opcode: TEXT, payload: 'fine' }, { opcode: TEXT, payload: Buffer.from([0xed, 0xa0, 0x80]) }
  ]), [msg('fine'), utf8Error])
  check(t, 'binary messages are not validated', frames([{ opcode: BINARY, payload: Buffer.from([0xff, 0xed, 0xa0, 0x80]) }]),
    [msg(Buffer.from([0xff, 0xed, 0xa0, 0x80]), true)])

  // Fail fast: the fragment that makes the sequence impossible fails, before the message ends.
  check(t, 'impossible lead byte: fails on its fragment, no final fragment needed', frames([
    { opcode: TEXT, payload: 'valid', fin: false },
    { opcode: CONT, payload: Buffer.from([0x61, 0xf5]), fin: false }
  ]), [utf8Error])
  check(t, 'F4 90 split across fragments: fails on the fragment with 90', frames([
    { opcode: TEXT, payload: Buffer.from([0x61, 0xf4]), fin: false },
    { opcode: CONT, payload: Buffer.from([0x90]), fin: false }
  ]), [utf8Error])
  check(t, 'ED then A0 (surrogate) across fragments', frames([
    { opcode: TEXT, payload: Buffer.from([0xed]), fin: false },
    { opcode: CONT, payload: Buffer.from([0xa0]), fin: false }
  ]), [utf8Error])
  check(t, 'E0 then 80 (overlong) across fragments', frames([
    { opcode: TEXT, payload: Buffer.from([0x20, 0xe0]), fin: false },
    { opcode: CONT, payload: Buffer.from([0x80, 0x80]), fin: false }
  ]), [utf8Error])
  check(t, 'a ping after the invalid fragment is never seen', frames([
    { opcode: TEXT, payload: Buffer.from([0xf0, 0x90]), fin: false },
    { opcode: CONT, payload: Buffer.from([0x41]), fin: false },
    { opcode: PING, payload: 'late' }
  ]), [utf8Error])
  check(t, 'a valid prefix is not failed before the message ends', frames([
    { opcode: TEXT, payload: Buffer.from([0x61, 0xf0, 0x9d]), fin: false },
    { opcode: PING, payload: 'still fine' }
  ]), [['ping', Buffer.from('still fine').toString('hex')]])
  check(t, 'truncated sequence when the final fragment ends', frames([
    { opcode: TEXT, payload: Buffer.from([0x61, 0xf0, 0x9d]), fin: false },
    { opcode: CONT, payload: Buffer.from([0x84]) }
  ]), [utf8Error])
  check(t, 'empty final fragment after a truncated sequence', frames([
    { opcode: TEXT, payload: Buffer.from([0xe2, 0x82]), fin: false },
    { opcode: CONT, payload: '' }
  ]), [utf8Error])

  // Valid multi-byte sequences cut across fragments at every byte.
  for (const sample of ['€', '𝄞', '\u{10FFFF}', '\u{FFFF}', '\u{D7FF}', '\u{E000}', 'é', '\u{80}', '\u{7FF}', '\u{800}', '\u{10000}']) {
    const bytes = Buffer.from('a' + sample + 'z')
    for (let cut = 1; cut < bytes.length; cut++) {
      check(t, `${bytes.toString('hex')} cut at ${cut}`, frames([
        { opcode: TEXT, payload: bytes.subarray(0, cut), fin: false },
        { opcode: CONT, payload: bytes.subarray(cut) }
      ]), [msg(bytes)], { roles: cut === 1 ? ROLES : ['server'] })
    }
    const perByte: FrameSpec[] = [...bytes].map((b, i) => ({ opcode: i === 0 ? TEXT : CONT, payload: Buffer.from([b]), fin: i === bytes.length - 1 }))
    check(t, `${bytes.toString('hex')} one byte per fragment`, frames(perByte), [msg(bytes)])
  }
})

t.test('maxPayload: 1009', async (t) => {
  check(t, 'a single frame over maxPayload fails from its header alone', frames([{ opcode: BINARY, payload: bytesOf(101), lengthCode: 126 }])
    , [tooBig], { maxPayload: 100 })
  // Only the header: the payload never arrives, the failure must not wait for it.
  check(t, 'header declaring 2^40 bytes', (masked) => encode([{ opcode: TEXT, lengthCode: 127, extendedLength: 1n << 40n }], { mask: roleMask(masked) }),
    [tooBig], { maxPayload: 100 })
  check(t, 'header declaring 101 bytes, no payload', (masked) => encode([{ opcode: TEXT, payload: bytesOf(101) }], { mask: roleMask(masked) }).subarray(0, masked ? 6 : 2),
    [tooBig], { maxPayload: 100 })
  check(t, 'exactly maxPayload is accepted', frames([{ opcode: BINARY, payload: bytesOf(100) }]), [msg(bytesOf(100), true)], { maxPayload: 100 })
  check(t, 'fragments adding up to exactly maxPayload', frames([
    { opcode: BINARY, payload: bytesOf(60), fin: false }, { opcode: CONT, payload: bytesOf(40) }
  ]), [msg(Buffer.concat([bytesOf(60), bytesOf(40)]), true)], { maxPayload: 100 })
  check(t, 'fragments adding up to more than maxPayload', frames([
    { opcode: BINARY, payload: bytesOf(60), fin: false }, { opcode: CONT, payload: bytesOf(41) }
  ]), [tooBig], { maxPayload: 100 })
  check(t, 'fragments over maxPayload fail before the final fragment', frames([
    { opcode: TEXT, payload: 'x'.repeat(60), fin: false }, { opcode: CONT, payload: 'y'.repeat(60), fin: false }
  ]), [tooBig], { maxPayload: 100 })
  check(t, 'a second message starts counting from zero', frames([
    { opcode: BINARY, payload: bytesOf(80), fin: false }, { opcode: CONT, payload: bytesOf(20) },
    { opcode: BINARY, payload: bytesOf(90), fin: false }, { opcode: CONT, payload: bytesOf(10) }
  ]), [msg(Buffer.concat([bytesOf(80), bytesOf(20)]), true), msg(Buffer.concat([bytesOf(90), bytesOf(10)]), true)], { maxPayload: 100 })
  check(t, 'control frames are not counted against maxPayload', frames([
    { opcode: TEXT, payload: 'x'.repeat(10), fin: false }, { opcode: PING, payload: bytesOf(50) }, { opcode: CONT, payload: 'y' }
  ]), [['ping', describe(bytesOf(50))], msg('x'.repeat(10) + 'y')], { maxPayload: 11 })
})

t.test('a 4 MiB message in 65,536 fragments of 64 bytes', async (t) => {
  const data = bytesOf(4 * MiB, 3)
  for (const role of ROLES) {
    const specs: FrameSpec[] = []
    for (let i = 0; i < 65536; i++) {
      specs.push({ opcode: i === 0 ? BINARY : CONT, payload: data.subarray(i * 64, i * 64 + 64), fin: i === 65535 })
    }
    const bytes = encode(specs, { mask: roleMask(role === 'server') })
    for (const chunkSize of [bytes.length, 65536, 1000, 7]) {
      const chunks: Buffer[] = []
      for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize))
      const host = new RecordingHost()
      const got: Buffer[] = []
      host.onMessage = (d) => { got.push(Buffer.from(d)) }
      const receiver = new Receiver(host, { isServer: role === 'server', maxPayload: 8 * MiB })
      for (const c of chunks) receiver.push(Buffer.from(c))
      t.equal(got.length, 1, `${role}, chunks of ${chunkSize}: one message`)
      t.ok(got[0]?.equals(data), `${role}, chunks of ${chunkSize}: the payload is intact`)
      t.same(host.events, [], 'nothing else happened')
    }
  }
  // The same message as text (valid UTF-8 with multi-byte characters cut at fragment ends).
  const text = Buffer.from('ab€𝄞'.repeat(Math.ceil(4 * MiB / 9))).subarray(0, 4 * MiB)
  const cut = text.lastIndexOf(0x61)
  const valid = text.subarray(0, cut)
  const specs: FrameSpec[] = []
  for (let off = 0, i = 0; off < valid.length; off += 64, i++) {
    specs.push({ opcode: i === 0 ? TEXT : CONT, payload: valid.subarray(off, off + 64), fin: off + 64 >= valid.length })
  }
  const host = new RecordingHost()
  const receiver = new Receiver(host, { isServer: true, maxPayload: 8 * MiB })
  receiver.push(encode(specs, { mask: FIXED_MASK }))
  t.same(host.events, [msg(valid)], 'text in 64-byte fragments with characters cut across them')
})

t.test('100,000 empty fragments then a final fragment: delivered, memory bounded', async (t) => {
  for (const role of ROLES) {
    const masked = role === 'server'
    const host = new RecordingHost()
    const receiver = new Receiver(host, { isServer: masked, maxPayload: 1024 })
    const state = receiver as unknown as { messageBuffer: Buffer | null, messageLength: number }
    const empty = encode([{ opcode: CONT, fin: false }], { mask: roleMask(masked) })
    receiver.push(encode([{ opcode: TEXT, fin: false }], { mask: roleMask(masked) }))
    const before = process.memoryUsage().heapUsed
    for (let i = 0; i < 1000; i++) {
      // 100 empty fragments per chunk, split oddly so headers straddle chunks.
      const chunk = Buffer.concat(Array.from({ length: 100 }, () => empty))
      receiver.push(chunk.subarray(0, 3))
      receiver.push(chunk.subarray(3))
    }
    t.equal(state.messageBuffer, null, `${role}: no message buffer was allocated for empty fragments`)
    t.equal(state.messageLength, 0, `${role}: nothing accumulated`)
    t.ok(process.memoryUsage().heapUsed - before < 64 * MiB, `${role}: heap stayed bounded`)
    receiver.push(encode([{ opcode: CONT, payload: 'end' }], { mask: roleMask(masked) }))
    t.same(host.events, [msg('end')], `${role}: the message is delivered`)
  }
})

t.test('a host that stops the receiver in a callback stops parsing', async (t) => {
  const host = new RecordingHost()
  const receiver = new Receiver(host, { isServer: true, maxPayload: 1000 })
  host.onMessage = (data) => {
    host.events.push(['message', describe(data), false])
    receiver.stop()
  }
  receiver.push(encode([{ opcode: TEXT, payload: 'a' }, { opcode: TEXT, payload: 'b' }, { opcode: PING }], { mask: FIXED_MASK }))
  t.same(host.events, [msg('a')])
  t.ok(receiver.stopped)
  receiver.push(encode([{ opcode: TEXT, payload: 'c' }], { mask: FIXED_MASK }))
  t.same(host.events, [msg('a')], 'later input is ignored')
})

t.test('masked frames split anywhere keep the mask phase', async (t) => {
  // A payload long enough for the word-at-a-time unmasking, in many odd chunk sizes.
  const data = bytesOf(1000, 11)
  const bytes = encode([{ opcode: BINARY, payload: data }], { mask: FIXED_MASK })
  for (const size of [1, 2, 3, 5, 13, 31, 33, 257]) {
    const host = new RecordingHost()
    const receiver = new Receiver(host, { isServer: true, maxPayload: 10000 })
    for (let i = 0; i < bytes.length; i += size) receiver.push(Buffer.from(bytes.subarray(i, i + size)))
    t.same(host.events, [msg(data, true)], `chunks of ${size}`)
  }
})

t.test('no uncaught exception from malformed input', async (t) => {
  let seed = 12345
  const rnd = (): number => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0
    return seed / 4294967296
  }
  const base = encode([
    { opcode: TEXT, payload: 'héllo', fin: false }, { opcode: PING, payload: 'p' }, { opcode: CONT, payload: ' wörld' },
    { opcode: BINARY, payload: bytesOf(200) }, { opcode: CLOSE, payload: closePayload(1000, 'bye') }
  ], { mask: FIXED_MASK })
  let thrown = 0
  let runs = 0
  for (let i = 0; i < 3000; i++) {
    let input: Buffer
    if (i % 3 === 0) {
      input = Buffer.alloc(1 + Math.floor(rnd() * 300))
      for (let j = 0; j < input.length; j++) input[j] = Math.floor(rnd() * 256)
    } else {
      input = Buffer.from(base)
      const flips = 1 + Math.floor(rnd() * 4)
      for (let j = 0; j < flips; j++) input[Math.floor(rnd() * input.length)] ^= 1 << Math.floor(rnd() * 8)
    }
    for (const isServer of [true, false]) {
      const host = new RecordingHost()
      const receiver = new Receiver(host, { isServer, maxPayload: 256 })
      runs++
      try {
        let off = 0
        while (off < input.length) {
          const n = 1 + Math.floor(rnd() * 40)
          receiver.push(input.subarray(off, off + n))
          off += n
        }
      } catch {
        thrown++
      }
      const errors = host.events.filter((e) => e[0] === 'error' || e[0] === 'close')
      if (errors.length > 1) t.fail(`more than one terminal event for input ${input.toString('hex')}`)
    }
  }
  t.equal(thrown, 0, `no exception in ${runs} runs`)
})

t.test('invalid UTF-8 fails on the TCP piece that carries it, inside one frame', async (t) => {
  for (const role of ROLES) {
    const masked = role === 'server'
    // One 200-byte text frame: valid text, then an impossible byte at offset 50, then more text.
    const payload = Buffer.from('a'.repeat(200))
    payload[50] = 0xff
    const whole = frame(TEXT, payload, { mask: roleMask(masked) })
    const headerLength = whole.length - payload.length
    const host = new RecordingHost()
    const receiver = new Receiver(host, { isServer: masked, maxPayload: MiB })
    receiver.push(whole.subarray(0, headerLength + 40))
    t.same(host.events, [], `${role}: the first 40 valid bytes raise nothing`)
    receiver.push(whole.subarray(headerLength + 40, headerLength + 60))
    t.same(host.events, [utf8Error], `${role}: the piece with the bad byte fails the connection, before the frame ends`)
    // A valid 4-byte character split across the pieces of one frame, at every offset, is delivered intact.
    const text = 'x'.repeat(13) + '\u{1F600}' + 'y'.repeat(13)
    const good = frame(TEXT, text, { mask: roleMask(masked) })
    for (let cut = 1; cut < good.length; cut++) {
      const h = new RecordingHost()
      const r = new Receiver(h, { isServer: masked, maxPayload: MiB })
      r.push(good.subarray(0, cut))
      r.push(good.subarray(cut))
      if (cut === 1 || cut === good.length - 1) t.same(h.events, [msg(text)], `${role}: split at ${cut}`)
      else if (JSON.stringify(h.events) !== JSON.stringify([msg(text)])) t.fail(`${role}: split at ${cut} gave ${JSON.stringify(h.events)}`)
    }
    // The same for a continuation frame of a fragmented text message.
    const fragmented = Buffer.concat([
      frame(TEXT, 'start', { fin: false, mask: roleMask(masked) }),
      frame(CONT, Buffer.concat([Buffer.from('b'.repeat(30)), Buffer.from([0xc0, 0x80]), Buffer.from('c'.repeat(30))]), { mask: roleMask(masked) })
    ])
    const h2 = new RecordingHost()
    const r2 = new Receiver(h2, { isServer: masked, maxPayload: MiB })
    r2.push(fragmented.subarray(0, fragmented.length - 20))
    t.same(h2.events, [utf8Error], `${role}: overlong C0 80 inside a continuation frame fails before the frame completes`)
  }
})
