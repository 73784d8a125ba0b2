// Hostile frames over real TCP: absurd lengths, fragment floods, invalid UTF-8 at every position, ping floods
// and decompression bombs. Each ends the connection with its RFC 6455 close code, with memory bounded: the
// bound is in each test's name and the measured growth is printed as a comment.
import t, { type Test } from 'tap'
import { createDeflateRaw, deflateRawSync, constants as zlib } from 'node:zlib'
import { Duplex } from 'node:stream'
import { Receiver, type ReceiverHost } from '../../lib/protocol/receiver.js'
import { Connection, type ConnectionHooks } from '../../lib/protocol/connection.js'
import type { WebSocketPluginOptions, WebSocketError } from '../../lib/index.js'
import {
  buildApp, listen, RawWs, frame, closeFrame, settledMemory, PeakSampler, guardUnhandled, waitFor, delay, mib, MiB,
  type MemorySample
} from '../helpers/index.js'

interface ServerRecord {
  errors: WebSocketError[]
  closes: Array<[number, string]>
  messages: Buffer[]
}

async function echoServer (t: Test, options: WebSocketPluginOptions = {}): Promise<{ port: number, rec: ServerRecord }> {
  const { app } = await buildApp(options)
  const rec: ServerRecord = { errors: [], closes: [], messages: [] }
  app.get('/ws', { websocket: true }, (socket) => {
    socket.on('error', (err) => rec.errors.push(err))
    socket.on('close', (code, reason) => rec.closes.push([code, reason]))
    socket.on('message', (data, isBinary) => {
      rec.messages.push(data)
      socket.send(data.length > 64 ? `got ${data.length} bytes` : data, { binary: isBinary })
    })
  })
  const guard = guardUnhandled()
  t.teardown(async () => {
    await app.close()
    guard.stop()
    if (guard.errors.length > 0) throw new Error(`unhandled errors: ${guard.errors.map(String).join('; ')}`)
  })
  return { port: await listen(app), rec }
}

/** Connect, write `bytes`, and wait until the server closed the connection. Returns the client. */
async function sendAndExpectClose (port: number, bytes: Buffer | Buffer[], ms = 5000): Promise<RawWs> {
  const ws = await RawWs.connect(port, '/ws', { keepMessages: true })
  for (const b of Array.isArray(bytes) ? bytes : [bytes]) {
    if (ws.socket.destroyed) break
    ws.write(b)
  }
  await ws.closed(ms)
  return ws
}

interface Growth { arrayBuffers: number, rss: number, heap: number }

/** Run `fn` and measure how far memory rose above a settled baseline (peak sampled every 5 ms). */
async function measure (fn: () => Promise<void>): Promise<Growth> {
  const base: MemorySample = await settledMemory()
  const peak = new PeakSampler(5)
  try {
    await fn()
  } finally {
    peak.stop()
  }
  return {
    arrayBuffers: Math.max(0, peak.peakArrayBuffers - base.arrayBuffers),
    rss: Math.max(0, peak.peakRss - base.rss),
    heap: Math.max(0, peak.peakHeap - base.heapUsed)
  }
}

function report (t: Test, what: string, g: Growth): void {
  t.comment(`${what}: peak growth arrayBuffers ${mib(g.arrayBuffers)}, RSS ${mib(g.rss)}, heap ${mib(g.heap)}`)
}

/** A masked header announcing `length` (64-bit form), without any payload. */
function header64 (opcode: number, length: bigint, fin = true): Buffer {
  return frame(opcode, Buffer.alloc(0), { fin, lengthCode: 127, extendedLength: length, mask: Buffer.from([0x11, 0x22, 0x33, 0x44]) })
}

t.test('a 2^62 length closes with 1009 before any buffering (arrayBuffers growth < 4 MiB, RSS < 32 MiB)', async (t) => {
  const { port, rec } = await echoServer(t)
  const g = await measure(async () => {
    const ws = await sendAndExpectClose(port, header64(0x2, 2n ** 62n))
    t.equal(ws.closeCode, 1009, 'Close 1009')
    // Byte by byte: still 1009, once the 14-byte header is complete.
    const ws2 = await RawWs.connect(port, '/ws')
    const h = header64(0x1, 2n ** 62n)
    for (let i = 0; i < h.length && !ws2.socket.destroyed; i++) {
      ws2.write(h.subarray(i, i + 1))
      await new Promise((resolve) => setImmediate(resolve))
    }
    await ws2.closed()
    t.equal(ws2.closeCode, 1009, 'Close 1009 with the header trickled one byte at a time')
  })
  report(t, '2^62 length', g)
  t.ok(g.arrayBuffers < 4 * MiB, `arrayBuffers growth ${mib(g.arrayBuffers)} < 4 MiB`)
  t.ok(g.rss < 32 * MiB, `RSS growth ${mib(g.rss)} < 32 MiB`)
  await waitFor(() => rec.closes.length === 2, 2000, 'server close events')
  t.same(rec.errors.map((e) => [e.code, e.closeCode]), [['FST_WS_MESSAGE_TOO_BIG', 1009], ['FST_WS_MESSAGE_TOO_BIG', 1009]])
  t.same(rec.closes.map((c) => c[0]), [1009, 1009], 'the server socket closes with 1009')
})

t.test('a 64-bit length with the top bit set (2^63) closes with 1002', async (t) => {
  const { port, rec } = await echoServer(t)
  const ws = await sendAndExpectClose(port, header64(0x2, 2n ** 63n))
  t.equal(ws.closeCode, 1002)
  await waitFor(() => rec.closes.length === 1, 2000, 'server close')
  t.equal(rec.errors[0]?.code, 'FST_WS_PROTOCOL_ERROR')
})

t.test('a 16-bit length over a small maxPayload closes with 1009 without waiting for the payload', async (t) => {
  const { port } = await echoServer(t, { maxPayload: 1000 })
  const h = Buffer.from([0x82, 0x80 | 126, 0xff, 0xff, 1, 2, 3, 4])
  const ws = await sendAndExpectClose(port, h)
  t.equal(ws.closeCode, 1009)
})

t.test('100,000 empty fragments cost no memory and end as one message (arrayBuffers growth < 8 MiB)', async (t) => {
  const { port, rec } = await echoServer(t)
  const empty = frame(0x0, Buffer.alloc(0), { fin: false })
  let flood: Buffer | null = Buffer.concat([frame(0x1, Buffer.alloc(0), { fin: false }), ...new Array<Buffer>(100_000).fill(empty), frame(0x0, 'ok')])
  const g = await measure(async () => {
    const ws = await RawWs.connect(port, '/ws')
    ws.write(flood!)
    flood = null
    const m = await ws.nextMessage(10_000)
    t.equal(m.payload.toString(), 'ok', 'the message completes and is echoed')
    ws.close()
    await ws.closed()
  })
  report(t, '100k empty fragments', g)
  t.ok(g.arrayBuffers < 8 * MiB, `arrayBuffers growth ${mib(g.arrayBuffers)} < 8 MiB`)
  t.same(rec.messages.map((m) => m.toString()), ['ok'])
})

t.test('100,000 empty fragments then a new data frame: 1002', async (t) => {
  const { port, rec } = await echoServer(t)
  const empty = frame(0x0, Buffer.alloc(0), { fin: false })
  const ws = await sendAndExpectClose(port, Buffer.concat([frame(0x2, Buffer.alloc(0), { fin: false }), ...new Array<Buffer>(100_000).fill(empty), frame(0x2, 'x')]), 10_000)
  t.equal(ws.closeCode, 1002)
  t.same(rec.messages, [], 'no message delivered')
})

t.test('100,000 one-byte fragments over maxPayload (64 KiB): 1009 (arrayBuffers growth < 8 MiB)', async (t) => {
  const { port, rec } = await echoServer(t, { maxPayload: 64 * 1024 })
  const one = frame(0x0, 'a', { fin: false })
  let flood: Buffer | null = Buffer.concat([frame(0x1, 'a', { fin: false }), ...new Array<Buffer>(100_000).fill(one), frame(0x0, 'a')])
  const g = await measure(async () => {
    const ws = await sendAndExpectClose(port, flood!, 10_000)
    flood = null
    t.equal(ws.closeCode, 1009)
  })
  report(t, '100k one-byte fragments over maxPayload', g)
  t.ok(g.arrayBuffers < 8 * MiB, `arrayBuffers growth ${mib(g.arrayBuffers)} < 8 MiB`)
  await waitFor(() => rec.errors.length === 1, 2000, 'server error')
  t.equal(rec.errors[0]!.code, 'FST_WS_MESSAGE_TOO_BIG')
})

t.test('100,000 one-byte fragments under maxPayload: one 100,001-byte message (arrayBuffers growth < 8 MiB)', async (t) => {
  const { port, rec } = await echoServer(t)
  const one = frame(0x0, 'a', { fin: false })
  let flood: Buffer | null = Buffer.concat([frame(0x1, 'a', { fin: false }), ...new Array<Buffer>(99_999).fill(one), frame(0x0, 'a')])
  const g = await measure(async () => {
    const ws = await RawWs.connect(port, '/ws')
    ws.write(flood!)
    flood = null
    const m = await ws.nextMessage(10_000)
    t.equal(m.payload.toString(), 'got 100001 bytes')
    ws.close()
    await ws.closed()
  })
  report(t, '100k one-byte fragments', g)
  t.ok(g.arrayBuffers < 8 * MiB, `arrayBuffers growth ${mib(g.arrayBuffers)} < 8 MiB`)
  t.equal(rec.messages[0]!.length, 100_001)
  t.ok(rec.messages[0]!.every((b) => b === 0x61), 'content intact')
})

t.test('an invalid byte in the 50,000th one-byte fragment: 1007, with the rest of the flood unread', async (t) => {
  const { port, rec } = await echoServer(t)
  const frames: Buffer[] = [frame(0x1, 'a', { fin: false })]
  for (let i = 1; i < 100_000; i++) frames.push(frame(0x0, i === 50_000 ? Buffer.from([0xff]) : Buffer.from('a'), { fin: i === 99_999 }))
  const ws = await sendAndExpectClose(port, Buffer.concat(frames), 10_000)
  t.equal(ws.closeCode, 1007)
  await waitFor(() => rec.errors.length === 1, 2000, 'server error')
  t.equal(rec.errors[0]!.code, 'FST_WS_INVALID_UTF8')
  t.same(rec.messages, [])
})

// "aé€😀b": 1-, 2-, 3- and 4-byte sequences.
const SAMPLE = Buffer.from('aé€😀b')

t.test('invalid UTF-8 at every position of a text message, whole or split in two fragments anywhere: 1007', async (t) => {
  const { port, rec } = await echoServer(t)
  let connections = 0
  for (let pos = 0; pos < SAMPLE.length; pos++) {
    for (const bad of [0xff, 0x80, 0xc0]) {
      const payload = Buffer.from(SAMPLE)
      payload[pos] = bad
      if (bad === 0x80 && (pos === 2 || pos === 4 || pos === 5 || (pos >= 7 && pos <= 9))) continue // still valid
      const whole = await sendAndExpectClose(port, frame(0x1, payload))
      t.equal(whole.closeCode, 1007, `byte ${pos} = 0x${bad.toString(16)}, one frame`)
      connections++
      const split = 1 + (pos * 7) % (SAMPLE.length - 1)
      const ws = await sendAndExpectClose(port, [frame(0x1, payload.subarray(0, split), { fin: false }), frame(0x0, payload.subarray(split))])
      t.equal(ws.closeCode, 1007, `byte ${pos} = 0x${bad.toString(16)}, split at ${split}`)
      connections++
    }
  }
  for (let cut = 1; cut <= 3; cut++) {
    const truncated = Buffer.concat([Buffer.from('a'), Buffer.from('😀').subarray(0, cut)])
    const ws = await sendAndExpectClose(port, [frame(0x1, truncated, { fin: false }), frame(0x0, Buffer.alloc(0))])
    t.equal(ws.closeCode, 1007, `a 4-byte sequence cut after ${cut} bytes at the end of the message`)
    connections++
  }
  const surrogate = await sendAndExpectClose(port, frame(0x1, Buffer.from([0xed, 0xa0, 0x80])))
  t.equal(surrogate.closeCode, 1007, 'an encoded surrogate')
  const overlong = await sendAndExpectClose(port, frame(0x1, Buffer.from([0xe0, 0x80, 0xaf])))
  t.equal(overlong.closeCode, 1007, 'an overlong encoding')
  const reason = await sendAndExpectClose(port, frame(0x8, Buffer.from([0x03, 0xe8, 0xff])))
  t.equal(reason.closeCode, 1007, 'invalid UTF-8 in a close reason')
  connections += 3
  await waitFor(() => rec.closes.length === connections, 3000, 'every server close')
  t.ok(rec.closes.every(([code]) => code === 1007), 'every server socket closed with 1007')
  t.same(rec.messages, [], 'no message delivered')
})

t.test('Receiver: invalid UTF-8 is reported on the fragment that makes it invalid, for every position and split', async (t) => {
  let checked = 0
  for (const isServer of [true, false]) {
    for (let pos = 0; pos < SAMPLE.length; pos++) {
      const payload = Buffer.from(SAMPLE)
      payload[pos] = 0xff
      for (let split = 1; split < SAMPLE.length; split++) {
        const events: string[] = []
        const host: ReceiverHost = {
          onMessage: () => events.push('message'),
          onPing: () => events.push('ping'),
          onPong: () => events.push('pong'),
          onCloseFrame: (code) => events.push(`close ${code}`),
          onProtocolError: (err) => events.push(`error ${err.closeCode}`),
          onBacklog: () => {}
        }
        const r = new Receiver(host, { isServer, maxPayload: 1024 })
        r.push(frame(0x1, payload.subarray(0, split), { fin: false, mask: isServer }))
        const afterFirst = events.slice()
        r.push(frame(0x0, payload.subarray(split), { mask: isServer }))
        if (pos < split) t.same(afterFirst, ['error 1007'], `0xff at ${pos}, split ${split}: failed on the first fragment`)
        else t.same(afterFirst, [], `0xff at ${pos}, split ${split}: the first fragment is fine`)
        t.same(events, ['error 1007'], 'one outcome: 1007')
        checked++
      }
    }
  }
  t.equal(checked, 2 * SAMPLE.length * (SAMPLE.length - 1))
})

t.test('a ping flood from a peer that never reads does not grow server memory without bound (bufferedAmount <= maxBufferedAmount, arrayBuffers growth < 16 MiB)', async (t) => {
  // Every ping is answered with a pong: 200,000 pings of 125 bytes ask for about 25 MiB of pongs. The
  // outbound limits (sendHighWaterMark / maxBufferedAmount) must bound what the server holds.
  const { app } = await buildApp({ sendHighWaterMark: 256 * 1024, maxBufferedAmount: 1024 * 1024, closeTimeout: 500 })
  const errors: string[] = []
  const codes: number[] = []
  const buffered: number[] = []
  app.get('/ws', { websocket: true }, (socket) => {
    socket.on('error', (err) => errors.push(err.code))
    socket.on('close', (code) => codes.push(code))
    socket.on('ping', () => { if (buffered.length < 1e6) buffered.push(socket.bufferedAmount) })
  })
  t.teardown(() => app.close())
  const port = await listen(app)
  const ping = frame(0x9, Buffer.alloc(125, 0x70))
  const batch = Buffer.concat(new Array<Buffer>(1000).fill(ping))
  const g = await measure(async () => {
    const ws = await RawWs.connect(port, '/ws', { answerPing: false })
    ws.socket.pause() // never read
    let sent = 0
    const deadline = Date.now() + 5000 // a bound on the flood, not a speed assertion
    while (sent < 200 && !ws.socket.destroyed && Date.now() < deadline) {
      if (!ws.write(batch)) {
        // Wait for drain, or 200 ms; either way drop the listener so waits do not pile up.
        let onDrain = (): void => {}
        await Promise.race([new Promise<void>((resolve) => { onDrain = resolve; ws.socket.once('drain', onDrain) }), delay(200)])
        ws.socket.removeListener('drain', onDrain)
      }
      sent++
    }
    t.comment(`client wrote ${sent} of 200 batches of 1000 pings before the server stopped reading or closed`)
    ws.destroy()
    await ws.closed()
  })
  report(t, 'ping flood', g)
  const maxBuffered = buffered.reduce((a, b) => Math.max(a, b), 0)
  t.comment(`server bufferedAmount peaked at ${mib(maxBuffered)}; errors ${JSON.stringify(errors)}`)
  t.ok(maxBuffered <= 1024 * 1024 + 1024, `server bufferedAmount ${mib(maxBuffered)} stays within maxBufferedAmount (1 MiB)`)
  t.ok(g.arrayBuffers < 16 * MiB, `arrayBuffers growth ${mib(g.arrayBuffers)} < 16 MiB`)
  await waitFor(() => codes.length === 1, 3000, 'server close')
})

/** A raw-deflate message (Z_SYNC_FLUSH, trailing 00 00 ff ff removed) of `size` zero bytes, built 1 MiB at a time. */
async function zeroBomb (size: number): Promise<Buffer> {
  const d = createDeflateRaw({ level: 9 })
  const out: Buffer[] = []
  d.on('data', (c: Buffer) => out.push(c))
  const zero = Buffer.alloc(MiB)
  for (let written = 0; written < size; written += MiB) {
    if (!d.write(zero)) await new Promise((resolve) => d.once('drain', resolve))
  }
  await new Promise((resolve) => d.flush(zlib.Z_SYNC_FLUSH, () => resolve(undefined)))
  d.close()
  const all = Buffer.concat(out)
  return all.subarray(0, all.length - 4)
}

t.test('decompression bombs (256 MiB of zeros in 255 KiB) close with 1009 (one bomb: arrayBuffers growth < 8 MiB; eight at once: < 32 MiB; RSS < 96 MiB)', async (t) => {
  const { port, rec } = await echoServer(t, { perMessageDeflate: true, maxPayload: MiB })
  const bomb = await zeroBomb(256 * MiB)
  t.ok(bomb.length < MiB, `the bomb is ${bomb.length} bytes on the wire, under maxPayload`)
  const offer = { 'Sec-WebSocket-Extensions': 'permessage-deflate' }
  let sent = 0
  const one = await measure(async () => {
    // one bomb in one frame
    const ws = await RawWs.connect(port, '/ws', { headers: offer })
    t.match(ws.responseHeaders['sec-websocket-extensions'], /permessage-deflate/)
    ws.write(frame(0x2, bomb, { rsv1: true }))
    await ws.closed()
    t.equal(ws.closeCode, 1009, 'one frame: 1009')
    sent++
    // the same bomb in 64 fragments
    const ws2 = await RawWs.connect(port, '/ws', { headers: offer })
    const step = Math.ceil(bomb.length / 64)
    for (let off = 0; off < bomb.length; off += step) {
      ws2.write(frame(off === 0 ? 0x1 : 0x0, bomb.subarray(off, off + step), { rsv1: off === 0, fin: off + step >= bomb.length }))
    }
    await ws2.closed()
    t.equal(ws2.closeCode, 1009, 'fragmented: 1009')
    sent++
  })
  report(t, 'one decompression bomb at a time', one)
  t.ok(one.arrayBuffers < 8 * MiB, `one bomb: arrayBuffers growth ${mib(one.arrayBuffers)} < 8 MiB`)
  t.ok(one.rss < 96 * MiB, `one bomb: RSS growth ${mib(one.rss)} < 96 MiB`)
  const eight = await measure(async () => {
    const many = await Promise.all(Array.from({ length: 8 }, () => RawWs.connect(port, '/ws', { headers: offer })))
    for (const c of many) c.write(frame(0x2, bomb, { rsv1: true }))
    await Promise.all(many.map((c) => c.closed()))
    t.same(many.map((c) => c.closeCode), new Array(8).fill(1009), 'eight concurrent bombs: 1009 each')
    sent += 8
  })
  report(t, 'eight decompression bombs at once', eight)
  t.ok(eight.arrayBuffers < 32 * MiB, `eight at once: arrayBuffers growth ${mib(eight.arrayBuffers)} < 32 MiB`)
  t.ok(eight.rss < 96 * MiB, `eight at once: RSS growth ${mib(eight.rss)} < 96 MiB`)
  await waitFor(() => rec.closes.length === sent, 3000, 'server closes')
  t.ok(rec.errors.every((e) => e.code === 'FST_WS_MESSAGE_TOO_BIG' && e.closeCode === 1009), 'every error: FST_WS_MESSAGE_TOO_BIG')
  t.same(rec.messages, [], 'nothing delivered')
})

t.test('a compressed message that inflates to just under maxPayload is delivered; corrupt data closes with 1007', async (t) => {
  const { port, rec } = await echoServer(t, { perMessageDeflate: true, maxPayload: 64 * 1024 })
  const offer = { 'Sec-WebSocket-Extensions': 'permessage-deflate' }
  const ok = await RawWs.connect(port, '/ws', { headers: offer })
  const deflated = deflateRawSync(Buffer.alloc(64 * 1024, 0x61), { finishFlush: zlib.Z_SYNC_FLUSH })
  ok.write(frame(0x1, deflated.subarray(0, deflated.length - 4), { rsv1: true }))
  const m = await ok.nextMessage()
  t.equal(m.payload.toString(), 'got 65536 bytes', 'inflated and delivered')
  t.equal(rec.messages[0]?.length, 64 * 1024)
  ok.write(closeFrame(1000))
  await ok.closed()
  const corrupt = await RawWs.connect(port, '/ws', { headers: offer })
  corrupt.write(frame(0x2, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00]), { rsv1: true }))
  await corrupt.closed()
  t.equal(corrupt.closeCode, 1007, 'corrupt deflate data: 1007')
  const noOffer = await sendAndExpectClose(port, frame(0x2, Buffer.from('x'), { rsv1: true }))
  t.equal(noOffer.closeCode, 1002, 'RSV1 without the extension negotiated: 1002')
})

t.test('deterministic: pongs owed to a peer that never reads are bounded by maxBufferedAmount (Connection over a stalled stream)', async (t) => {
  // A stream whose writes never complete: every byte written stays in writableLength.
  const stalled = new Duplex({ read () {}, write (_chunk, _enc, _cb) { /* never completes */ }, highWaterMark: 16 })
  const events: string[] = []
  const hooks: ConnectionHooks<null> = {
    message: () => {}, ping: () => {}, pong: () => {}, drain: () => {}, callbackError: () => {},
    error: (_owner, err) => events.push(err.code), close: (_owner, code) => events.push(`close ${code}`)
  }
  const conn = new Connection(stalled, null, hooks, {
    isServer: true, maxPayload: MiB, closeTimeout: 100, sendHighWaterMark: 16 * 1024, maxBufferedAmount: 64 * 1024,
    drainTimeout: 0, inboundHighWaterMark: MiB, heartbeat: null, deflate: null
  })
  conn.start(null)
  const ping = frame(0x9, Buffer.alloc(125, 1))
  for (let i = 0; i < 10_000 && conn.readyState === 1; i++) stalled.emit('data', Buffer.from(ping))
  t.comment(`after up to 10,000 pings: bufferedAmount ${mib(conn.bufferedAmount)}, readyState ${conn.readyState}, events ${JSON.stringify(events)}`)
  t.ok(conn.bufferedAmount <= 64 * 1024 + 256, `bufferedAmount ${conn.bufferedAmount} <= maxBufferedAmount (64 KiB) + one pong`)
  t.ok(events.includes('FST_WS_SLOW_CONSUMER') || stalled.isPaused(), 'the peer is closed with 1008 or reading is paused')
  stalled.destroy()
})
