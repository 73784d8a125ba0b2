/**
 * The engine's hand-offs under pressure: socket reads → inflate queue, parser → held messages, close → pending
 * compressed writes, header → payload buffer. Each test attacks one seam with pipelined input, a peer that closes
 * mid-way, or a consumer that stops consuming, and states its memory bound from what the process really holds.
 */
import { test } from 'tap'
import { deflateRawSync, constants as zlibConstants } from 'node:zlib'
import { connect, type Socket } from 'node:net'
import WebSocketClient from 'ws'
import {
  buildApp, listen, RawWs, frame, closeFrame, settledMemory, MiB, mib, waitFor, delay, gc,
  handshake as handshakeText, guardUnhandled
} from '../helpers/index.js'
import type { WebSocket } from '../../lib/index.js'

const DEFLATE = { 'sec-websocket-extensions': 'permessage-deflate' }

/**
 * A permessage-deflate payload carrying `data` in a stored block, as a compressor emits incompressible input:
 * the block, then the sync flush's empty stored block minus the 00 00 ff ff that RFC 7692 strips (its header
 * byte stays).
 */
function storedMessage (data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + data.length + 1)
  out[0] = 0x00
  out.writeUInt16LE(data.length, 1)
  out.writeUInt16LE(~data.length & 0xffff, 3)
  data.copy(out, 5)
  out[5 + data.length] = 0x00
  return out
}

/** Write `chunks` in order, honouring the socket's backpressure; resolves when all are handed to the socket. */
async function writeAll (socket: Socket, chunks: Iterable<Buffer>): Promise<void> {
  for (const c of chunks) {
    if (socket.destroyed) return
    if (!socket.write(c)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          socket.removeListener('drain', done)
          socket.removeListener('close', done)
          resolve()
        }
        socket.once('drain', done)
        socket.once('close', done)
      })
    }
  }
}

test('inflate backlog: reading pauses while decompression is behind, the backlog stays bounded, nothing is lost', async (t) => {
  const HWM = 256 * 1024
  const { app } = await buildApp({ perMessageDeflate: true, inboundHighWaterMark: HWM })
  t.teardown(() => app.close())
  const COUNT = 8 * 1024
  const body = Buffer.alloc(1020, 0x61)
  const FRAME = frame(0x2, storedMessage(Buffer.concat([Buffer.alloc(4), body])), { rsv1: true }).length
  let received = 0
  let inOrder = true
  let handshakeBytes = -1
  let peakBacklog = 0
  app.get('/d', { websocket: true }, (socket) => {
    const raw = socket.rawSocket as Socket
    handshakeBytes = raw.bytesRead
    socket.on('message', (data) => {
      if (data.readUInt32BE(0) !== received) inOrder = false
      received++
      // Read from the socket but not yet delivered: what waits behind the inflating message.
      peakBacklog = Math.max(peakBacklog, raw.bytesRead - handshakeBytes - received * FRAME)
    })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/d', { headers: DEFLATE })
  t.teardown(() => ws.destroy())
  t.match(ws.responseHeaders['sec-websocket-extensions'], /permessage-deflate/)
  function * frames (): Generator<Buffer> {
    for (let i = 0; i < COUNT; i++) {
      const payload = Buffer.allocUnsafe(4 + body.length)
      payload.writeUInt32BE(i, 0)
      body.copy(payload, 4)
      yield frame(0x2, storedMessage(payload), { rsv1: true })
    }
  }
  await writeAll(ws.socket, frames())
  await waitFor(() => received === COUNT || ws.tcpClosed, 60_000, 'every message inflated')
  t.equal(received, COUNT, `all ${COUNT} messages (${mib(COUNT * FRAME)} on the wire) delivered`)
  t.ok(inOrder, 'in order')
  // Bound: the high-water mark, plus the read that crossed it and the one Node had already made when reading
  // paused (64 KiB each at most). Without the pause the whole stream is read ahead (8 MiB here).
  t.ok(peakBacklog <= HWM + 2 * 64 * 1024, `at most ${mib(peakBacklog)} read ahead of delivery (inboundHighWaterMark ${mib(HWM)})`)
})

test('inflate backlog: a message, a Close and FIN in one burst: the message is delivered, then the Close', async (t) => {
  const { app } = await buildApp({ perMessageDeflate: true })
  t.teardown(() => app.close())
  const messages: string[] = []
  const closed = new Promise<number>((resolve) => {
    app.get('/d', { websocket: true }, (socket) => {
      socket.on('message', (data) => { messages.push(data.toString()) })
      socket.on('close', (code) => resolve(code))
    })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/d', { headers: DEFLATE, answerClose: false })
  t.teardown(() => ws.destroy())
  const compressed = deflateRawSync(Buffer.from('last words'), { finishFlush: zlibConstants.Z_SYNC_FLUSH })
  ws.socket.end(Buffer.concat([frame(0x1, compressed.subarray(0, compressed.length - 4), { rsv1: true }), closeFrame(1000, 'bye')]))
  t.equal(await closed, 1000, 'the server saw the Close, not an abnormal end')
  t.same(messages, ['last words'], 'the message that came before the Close was delivered')
  await ws.closed()
  t.equal(ws.closeCode, 1000, 'our Close was echoed before TCP ended')
})

test('close while compressing: a reply being compressed is written before our Close, the peer sees 1000', async (t) => {
  const { app } = await buildApp({ perMessageDeflate: { threshold: 0 } })
  t.teardown(() => app.close())
  const reply = 'x'.repeat(50_000)
  app.get('/d', { websocket: true }, (socket) => {
    socket.on('message', () => { socket.send(reply) })
  })
  const port = await listen(app)
  for (const mode of ['ws client', 'raw burst'] as const) {
    if (mode === 'ws client') {
      const client = new WebSocketClient(`ws://127.0.0.1:${port}/d`, { perMessageDeflate: true })
      t.teardown(() => client.terminate())
      await new Promise((resolve, reject) => { client.once('open', resolve); client.once('error', reject) })
      const got: string[] = []
      client.on('message', (data) => got.push(data.toString()))
      const closed = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)))
      client.send('hi')
      client.close(1000)
      t.equal(await closed, 1000, `${mode}: closed cleanly, not 1006`)
      t.same(got.map((m) => m.length), [reply.length], `${mode}: the reply sent before the Close arrived`)
    } else {
      const ws = await RawWs.connect(port, '/d', { headers: DEFLATE, answerClose: false })
      t.teardown(() => ws.destroy())
      ws.socket.write(Buffer.concat([frame(0x1, 'hi'), closeFrame(1000)]))
      await ws.closed()
      t.equal(ws.messages.length, 1, `${mode}: one (compressed) reply before the Close`)
      t.equal(ws.messages[0]?.rsv1, true, `${mode}: it was compressed`)
      t.equal(ws.closeCode, 1000, `${mode}: then our Close`)
    }
  }
})

test('held messages: a small message held for a late listener does not pin the read chunk it came in', async (t) => {
  let socketRef: WebSocket | null = null
  const { app } = await buildApp({})
  t.teardown(() => app.close())
  app.get('/held', { websocket: true }, (socket) => { socketRef = socket })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/held')
  t.teardown(() => ws.destroy())
  await waitFor(() => socketRef !== null, 2000, 'handler')
  // Each ~64 KiB of stream: 500 unsolicited pongs (no reply, nothing held) and one 1-byte text message.
  const CHUNKS = 1500
  const pongs = Buffer.concat(Array.from({ length: 500 }, () => frame(0xa, Buffer.alloc(125))))
  const before = await settledMemory()
  await writeAll(ws.socket, (function * () {
    for (let i = 0; i < CHUNKS; i++) yield Buffer.concat([pongs, frame(0x1, String(i % 10))])
  })())
  // Everything sent was read or reading paused: wait until the server stops receiving.
  let last = -1
  await waitFor(() => {
    const now = (socketRef!.rawSocket as Socket).bytesRead
    const settled = now === last
    last = now
    return settled
  }, 20_000, 'server reads to settle', 200)
  const held = await settledMemory()
  const growth = held.arrayBuffers - before.arrayBuffers
  t.ok(growth < 16 * MiB, `held 1-byte messages retain ${mib(growth)} of buffers (${mib(CHUNKS * pongs.length)} streamed through)`)
  const got: string[] = []
  socketRef!.on('message', (data) => got.push(data.toString()))
  await waitFor(() => got.length === CHUNKS, 20_000, 'held messages delivered')
  t.equal(got.length, CHUNKS, 'every held message is delivered once a listener attaches')
  t.ok(got.every((m, i) => m === String(i % 10)), 'in order')
})

test('payload buffer grows with the bytes that arrive, not with the length a header announces', async (t) => {
  const { app } = await buildApp({ maxPayload: 1024 * 1024 })
  t.teardown(() => app.close())
  app.get('/big', { websocket: true }, () => {})
  const port = await listen(app)
  const SOCKETS = 200
  const sockets: Socket[] = []
  t.teardown(() => { for (const s of sockets) s.destroy() })
  const before = await settledMemory()
  for (let i = 0; i < SOCKETS; i++) {
    const s = connect({ host: '127.0.0.1', port })
    s.on('error', () => {})
    sockets.push(s)
    await new Promise<void>((resolve) => s.once('connect', () => resolve()))
    // A masked binary frame announcing exactly maxPayload (1 MiB), then 5 payload bytes: 19 bytes in all.
    const header = Buffer.alloc(14)
    header[0] = 0x82
    header[1] = 0x80 | 127
    header.writeUInt32BE(0, 2)
    header.writeUInt32BE(1024 * 1024, 6)
    s.write(Buffer.concat([Buffer.from(handshakeText('/big', port)), header, Buffer.alloc(5)]))
  }
  await delay(300)
  gc()
  const growth = (await settledMemory()).arrayBuffers - before.arrayBuffers
  t.ok(growth < 24 * MiB, `${SOCKETS} sockets that each announced 1 MiB and sent 5 bytes hold ${mib(growth)} of buffers`)
})

test('a listener that returns a rejected promise closes the socket with 1011 like a throwing one, for every event', async (t) => {
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const { app, logs } = await buildApp({})
  t.teardown(() => app.close())
  app.get('/reject', { websocket: true }, (socket) => {
    socket.on('message', async () => { throw new Error('boom in an async listener') })
  })
  app.get('/reject-close', { websocket: true }, (socket) => {
    socket.on('close', async () => { throw new Error('boom in an async close listener') })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/reject')
  t.teardown(() => ws.destroy())
  ws.send('go')
  await ws.closed()
  t.equal(ws.closeCode, 1011, 'closed with 1011 (internal error)')
  t.ok(logs.lines.some((l) => l.level === 50 && JSON.stringify(l).includes('boom in an async listener')), 'the rejection is logged')
  const ws2 = await RawWs.connect(port, '/reject-close')
  t.teardown(() => ws2.destroy())
  ws2.close(1000)
  await ws2.closed()
  await delay(20)
  t.ok(logs.lines.some((l) => l.level === 50 && JSON.stringify(l).includes('boom in an async close listener')), 'a rejected close listener is logged')
  t.same(guard.errors, [], 'no unhandled rejection, no uncaught exception')
})

test('inflate queue: a peer that vanishes mid-backlog closes 1006, and the zlib limiter keeps serving others', async (t) => {
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const { app } = await buildApp({ perMessageDeflate: { threshold: 0 } })
  t.teardown(() => app.close())
  const closes: number[] = []
  app.get('/d', { websocket: true }, (socket) => {
    socket.on('message', (data) => { socket.send(data) })
    socket.on('close', (code) => closes.push(code))
  })
  const port = await listen(app)
  // Ten peers that each pipeline 200 compressed messages and reset the connection without reading a byte.
  for (let i = 0; i < 10; i++) {
    const ws = await RawWs.connect(port, '/d', { headers: DEFLATE })
    const burst = Buffer.concat(Array.from({ length: 200 }, () => frame(0x2, storedMessage(Buffer.alloc(2000, i)), { rsv1: true })))
    ws.socket.write(burst)
    ws.socket.resetAndDestroy()
  }
  await waitFor(() => closes.length === 10, 5000, 'ten closes')
  t.same(closes, Array(10).fill(1006), 'each closed 1006')
  // The limiter's slots were released: a fresh client still gets its compressed echo.
  const ws = await RawWs.connect(port, '/d', { headers: DEFLATE })
  t.teardown(() => ws.destroy())
  ws.write(frame(0x2, storedMessage(Buffer.from('still here')), { rsv1: true }))
  const reply = await ws.nextMessage()
  t.equal(reply.rsv1, true, 'echo compressed')
  t.same(guard.errors, [], 'no uncaught error')
})

test('close → pending writes: a peer that vanishes while replies are compressing fails their callbacks, nothing leaks', async (t) => {
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const { app } = await buildApp({ perMessageDeflate: { threshold: 0 } })
  t.teardown(() => app.close())
  const results: Array<string | null> = []
  let closeCode = 0
  app.get('/d', { websocket: true }, (socket) => {
    socket.on('message', () => {
      for (let i = 0; i < 50; i++) socket.send('y'.repeat(20_000), (err) => { results.push(err?.message ?? null) })
      ;(socket.rawSocket as Socket).destroy()
    })
    socket.on('close', (code) => { closeCode = code })
  })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/d', { headers: DEFLATE })
  t.teardown(() => ws.destroy())
  ws.send('go')
  await waitFor(() => results.length === 50, 5000, 'every send callback')
  t.equal(closeCode, 1006, 'closed 1006')
  t.ok(results.every((r) => r !== null), 'no callback reported success for a message that was never written')
  t.same(guard.errors, [], 'no uncaught error')
})

test('held messages and inflate backlog together: a consumer that never reads pauses the peer, then gets everything', async (t) => {
  let server: WebSocket | null = null
  const { app } = await buildApp({ perMessageDeflate: true, inboundHighWaterMark: 64 * 1024 })
  t.teardown(() => app.close())
  app.get('/d', { websocket: true }, (socket) => { server = socket })
  const port = await listen(app)
  const ws = await RawWs.connect(port, '/d', { headers: DEFLATE })
  t.teardown(() => ws.destroy())
  const COUNT = 2000
  void writeAll(ws.socket, (function * () {
    for (let i = 0; i < COUNT; i++) {
      const payload = Buffer.alloc(1000, 0x62)
      payload.writeUInt32BE(i, 0)
      yield frame(0x2, storedMessage(payload), { rsv1: true })
    }
  })())
  await waitFor(() => server !== null, 2000, 'handler')
  let last = -1
  await waitFor(() => {
    const now = (server!.rawSocket as Socket).bytesRead
    const settled = now === last
    last = now
    return settled
  }, 10_000, 'reading to pause', 200)
  // Held messages (up to 64 KiB) plus the backlog behind an inflating message (up to 64 KiB plus two reads).
  t.ok(last < 512 * 1024, `the server read ${mib(last)} of ${mib(COUNT * 1000)} before it paused`)
  const got: number[] = []
  server!.on('message', (data) => got.push(data.readUInt32BE(0)))
  await waitFor(() => got.length === COUNT, 20_000, 'everything delivered')
  t.ok(got.every((n, i) => n === i), `all ${COUNT} delivered in order once a listener attached`)
})
