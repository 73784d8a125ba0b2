/**
 * The frame writer: exact header bytes for every length form, masking in the
 * client role (fresh keys, caller's data untouched), zero-copy large payloads,
 * ordering around compression, and a round trip through the Receiver.
 */
import t from 'tap'
import { Writable, type Duplex } from 'node:stream'
import { Sender, encodeFrame, flushBatches } from '../../lib/protocol/sender.js'
import { Receiver } from '../../lib/protocol/receiver.js'
import type { PerMessageDeflate } from '../../lib/extensions/permessage-deflate/codec.js'
import { parseFrames, RecordingHost, describe } from '../helpers/index.js'

function sink (): { socket: Duplex, chunks: Buffer[], all: () => Buffer } {
  const chunks: Buffer[] = []
  const w = new Writable({
    write (chunk: Buffer, _enc, cb) { chunks.push(chunk); cb() }
  })
  // Frames are batched until the next tick: flush them before reading.
  return { socket: w as unknown as Duplex, chunks, all: () => { flushBatches(); return Buffer.concat(chunks) } }
}

function pattern (n: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff
  return b
}

t.test('server role: unmasked frames with minimal length encodings', async (t) => {
  const cases: Array<[number, string]> = [
    [0, '8200'], [1, '8201'], [125, '827d'], [126, '827e007e'], [65535, '827effff'],
    [65536, '827f0000000000010000'], [70000, '827f0000000000011170']
  ]
  for (const [len, header] of cases) {
    const { socket, all } = sink()
    const sender = new Sender(socket, false)
    const data = pattern(len)
    sender.sendMessage(0x2, data)
    const out = all()
    t.equal(out.subarray(0, header.length / 2).toString('hex'), header, `header for ${len} bytes`)
    t.ok(out.subarray(header.length / 2).equals(data), `payload of ${len} bytes follows unchanged`)
  }
})

t.test('server role: a large payload is written without a copy, small ones in one buffer', async (t) => {
  const big = sink()
  const data = pattern(100_000)
  new Sender(big.socket, false).sendMessage(0x2, data)
  flushBatches()
  t.equal(big.chunks.length, 2, 'header and payload')
  t.equal(big.chunks[1], data, 'the payload is the caller\'s buffer itself')
  const small = sink()
  new Sender(small.socket, false).sendMessage(0x1, Buffer.from('hi'))
  flushBatches()
  t.equal(small.chunks.length, 1, 'one write for a small frame')
  t.equal(small.chunks[0]!.toString('hex'), '81026869')
})

t.test('client role: every frame masked with a fresh key, caller data untouched', async (t) => {
  const { socket, all } = sink()
  const sender = new Sender(socket, true)
  const payloads = [Buffer.alloc(0), Buffer.from('hello'), pattern(126), pattern(65536), pattern(100_000)]
  const copies = payloads.map((p) => Buffer.from(p))
  for (const p of payloads) sender.sendMessage(0x2, p)
  sender.sendText('héllo ✓')
  sender.sendControl(0x9, Buffer.from('ping'))
  t.ok(payloads.every((p, i) => p.equals(copies[i]!)), 'the caller\'s buffers were not modified')
  const { frames, rest } = parseFrames(all())
  t.equal(rest.length, 0, 'nothing left over')
  t.equal(frames.length, 7)
  t.ok(frames.every((f) => f.masked), 'every frame has the mask bit')
  for (let i = 0; i < payloads.length; i++) t.ok(frames[i]!.payload.equals(payloads[i]!), `payload ${i} unmasks to the data`)
  t.equal(frames[5]!.payload.toString(), 'héllo ✓')
  t.equal(frames[5]!.opcode, 1)
  t.equal(frames[6]!.opcode, 9)
  // Mask keys: read them from the raw bytes.
  const raw = all()
  const keys = new Set<string>()
  let off = 0
  while (off < raw.length) {
    let len = raw[off + 1]! & 0x7f
    let p = off + 2
    if (len === 126) { len = raw.readUInt16BE(p); p += 2 } else if (len === 127) { len = Number(raw.readBigUInt64BE(p)); p += 8 }
    keys.add(raw.subarray(p, p + 4).toString('hex'))
    off = p + 4 + len
  }
  t.equal(keys.size, 7, 'seven frames, seven different mask keys')
})

t.test('sendText encodes multi-byte text with the right byte length', async (t) => {
  for (const text of ['', 'a', '€'.repeat(42), '€'.repeat(43), '𝄞'.repeat(20000)]) {
    const { socket, all } = sink()
    new Sender(socket, false).sendText(text)
    const { frames } = parseFrames(all())
    t.equal(frames.length, 1)
    t.equal(frames[0]!.payload.toString(), text, `${Buffer.byteLength(text)} bytes of text`)
  }
})

t.test('encodeFrame: fin, rsv1, opcode and masking', async (t) => {
  t.equal(encodeFrame(0x1, Buffer.from('a')).toString('hex'), '810161')
  t.equal(encodeFrame(0x2, Buffer.from('a'), false).toString('hex'), '020161')
  t.equal(encodeFrame(0x1, Buffer.from('a'), true, true).toString('hex'), 'c10161')
  const masked = encodeFrame(0x2, pattern(300), true, false, true)
  const { frames } = parseFrames(masked)
  t.ok(frames[0]!.masked)
  t.ok(frames[0]!.payload.equals(pattern(300)))
})

t.test('write callbacks run once the frame is written', async (t) => {
  const { socket } = sink()
  const sender = new Sender(socket, false)
  const done = await new Promise<unknown[]>((resolve) => {
    const results: unknown[] = []
    sender.sendMessage(0x2, pattern(10), (err) => results.push(err ?? null))
    sender.sendText('x', (err) => results.push(err ?? null))
    sender.sendMessage(0x2, pattern(20000), (err) => { results.push(err ?? null); resolve(results) })
  })
  t.same(done, [null, null, null])
})

t.test('while a message compresses, later messages wait in order; pings pass; Close waits', async (t) => {
  const { socket, all } = sink()
  const pending: Array<() => void> = []
  const fake = {
    threshold: 100,
    compress (data: Buffer, cb: (err: Error | null, out: Buffer | null) => void) {
      pending.push(() => cb(null, Buffer.from('Z' + data.length)))
    }
  }
  const sender = new Sender(socket, false, null, fake as unknown as PerMessageDeflate)
  sender.sendMessage(0x2, pattern(200)) // compressed
  sender.sendText('small') // must wait behind
  sender.sendControl(0x9, Buffer.from('p')) // passes
  sender.sendControl(0x8, Buffer.from([0x03, 0xe8])) // waits
  // The messages waiting for compression, plus the ping frame (3 bytes) waiting for this tick's single write.
  t.equal(sender.pendingBytes, 200 + 5 + 2 + 3, 'queued bytes are counted')
  let frames = parseFrames(all()).frames
  t.same(frames.map((f) => f.opcode), [0x9], 'only the ping left')
  pending.shift()!()
  frames = parseFrames(all()).frames
  t.same(frames.map((f) => [f.opcode, f.rsv]), [[0x9, 0], [0x2, 4], [0x1, 0], [0x8, 0]], 'compressed (RSV1), then text, then Close')
  t.equal(frames[1]!.payload.toString(), 'Z200')
  t.equal(sender.pendingBytes, 0)
})

t.test('abort() fails the callbacks of queued messages', async (t) => {
  const { socket } = sink()
  const sender = new Sender(socket, false, null, { threshold: 1, compress () {} } as unknown as PerMessageDeflate)
  const errors: Array<Error | null | undefined> = []
  sender.sendMessage(0x2, pattern(10), (err) => errors.push(err))
  sender.sendMessage(0x2, pattern(10), (err) => errors.push(err))
  sender.abort(new Error('gone'))
  t.equal(errors.length, 2)
  t.ok(errors.every((e) => e instanceof Error && e.message === 'gone'))
  t.equal(sender.pendingBytes, 0)
})

t.test('a compression failure reports to the host and the callback', async (t) => {
  const { socket } = sink()
  let finish: (() => void) | null = null
  const seen: string[] = []
  const host = { onSendError (err: Error) { seen.push('onError ' + err.message) }, onCallbackError () {} }
  const sender = new Sender(socket, false, host, {
    threshold: 1,
    compress (_d: Buffer, cb: (e: Error | null, r: Buffer | null) => void) { finish = () => cb(new Error('zlib'), null) }
  } as unknown as PerMessageDeflate)
  sender.sendMessage(0x2, pattern(10), (err) => seen.push('cb ' + (err?.message ?? 'ok')))
  ;(finish as unknown as () => void)()
  t.same(seen, ['cb zlib', 'onError zlib'])
})

t.test('round trip: what the client sender writes, a server receiver reads, and back', async (t) => {
  for (const [isClient, isServer] of [[true, true], [false, false]]) {
    const { socket, all } = sink()
    const sender = new Sender(socket, isClient)
    const msgs = [pattern(0), pattern(125), pattern(126), pattern(65535), pattern(65536), pattern(200_000)]
    for (const m of msgs) sender.sendMessage(0x2, m)
    sender.sendText('done')
    const host = new RecordingHost()
    const receiver = new Receiver(host, { isServer, maxPayload: 1 << 20 })
    const bytes = all()
    for (let i = 0; i < bytes.length; i += 4099) receiver.push(bytes.subarray(i, i + 4099))
    t.same(host.events, [...msgs.map((m) => ['message', describe(m), true]), ['message', describe(Buffer.from('done')), false]],
      isClient ? 'client to server' : 'server to client')
  }
})

t.test('frames written in one tick reach the socket together, on the next tick', async (t) => {
  const writes: number[] = []
  const w = new Writable({
    writev (chunks, cb) { writes.push(chunks.length); cb() },
    write (_chunk, _enc, cb) { writes.push(1); cb() }
  })
  const sender = new Sender(w as unknown as Duplex, false)
  for (let i = 0; i < 50; i++) sender.sendText('message ' + i)
  sender.writeRaw(encodeFrame(0x1, Buffer.from('published')))
  t.same(writes, [], 'nothing written synchronously')
  await new Promise((resolve) => process.nextTick(resolve))
  // The 50 small frames were joined into one buffer, written before the published frame: one writev of 2 chunks.
  t.same(writes, [2], 'all 51 frames in one writev (the 50 small ones as one buffer)')
  sender.sendText('later')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(writes, [2, 1], 'the next tick starts a new batch')
})

t.test('a tick\'s small frames leave as one write of at most 64 KiB, in order with large frames and raw frames', async (t) => {
  const writes: Buffer[] = []
  const w = new Writable({
    writev (chunks, cb) { for (const c of chunks) writes.push(c.chunk as Buffer); cb() },
    write (chunk: Buffer, _enc, cb) { writes.push(chunk); cb() }
  })
  const sender = new Sender(w as unknown as Duplex, false)
  const order: string[] = []
  for (let i = 0; i < 100; i++) sender.sendText(`small ${i}`, () => order.push(`small ${i}`))
  sender.sendMessage(0x2, pattern(20_000), () => order.push('large'))
  sender.sendText('after large', () => order.push('after large'))
  sender.writeRaw(encodeFrame(0x1, Buffer.from('raw')))
  for (let i = 0; i < 100; i++) sender.sendMessage(0x2, pattern(1000))
  await new Promise((resolve) => setImmediate(resolve))
  const frames = parseFrames(Buffer.concat(writes)).frames
  t.equal(frames.length, 100 + 1 + 1 + 1 + 100, 'every frame written')
  t.same(frames.slice(0, 100).map((f) => f.payload.toString()), Array.from({ length: 100 }, (_, i) => `small ${i}`), 'small frames first, in order')
  t.equal(frames[100]!.payload.length, 20_000, 'then the large frame')
  t.equal(frames[101]!.payload.toString(), 'after large')
  t.equal(frames[102]!.payload.toString(), 'raw', 'then the raw frame')
  t.ok(writes.every((c) => c.length <= 64 * 1024 + 20_000), 'no write joins more than 64 KiB of small frames')
  t.ok(writes.length < 20, `${writes.length} writes for 203 frames`)
  t.same(order, [...Array.from({ length: 100 }, (_, i) => `small ${i}`), 'large', 'after large'], 'callbacks in order')
})

