/**
 * The connection state machine over real TCP (raw client speaking bytes) and
 * over injectWS: the close handshake in every direction, the close timer,
 * close() argument errors, ping/pong, terminate, failing the connection, and
 * the heartbeat.
 */
import t from 'tap'
import { RawWs, frames, closePayload, startServer, once, within, delay, waitFor } from '../helpers/index.js'
import type { WebSocket } from '../../lib/socket/websocket.js'
import type { WebSocketError } from '../../lib/errors.js'

const TEXT = 0x1
const CLOSE = 0x8
const PING = 0x9
const PONG = 0xa

function closeOf (socket: WebSocket, ms = 3000): Promise<[number, string]> {
  return once<[number, string]>(socket, 'close', ms)
}

t.test('peer closes: its code is echoed without the reason, then the server ends TCP', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket)
  client.write({ opcode: CLOSE, payload: closePayload(4001, 'bye ✓') })
  const echo = await client.nextFrame(CLOSE)
  t.equal(echo.payload.toString('hex'), closePayload(4001).toString('hex'), 'the status code is echoed')
  await waitFor(() => client.ended, 2000, 'the server to end TCP')
  t.pass('the server ended TCP first')
  t.same(await closed, [4001, 'bye ✓'], 'close event with the peer\'s code and reason')
  t.equal(socket.readyState, socket.CLOSED)
})

t.test('peer closes without a status: an empty Close is echoed, close event 1005', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket)
  client.write({ opcode: CLOSE })
  const echo = await client.nextFrame(CLOSE)
  t.equal(echo.payload.length, 0)
  await waitFor(() => client.ended, 2000, 'end')
  t.same(await closed, [1005, ''])
})

t.test('data after the peer\'s Close is ignored, no pong after Close', async (t) => {
  const srv = await startServer({}, (s) => { s.on('message', () => t.fail('no message after Close')) })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket)
  client.write([{ opcode: CLOSE, payload: closePayload(1000) }, { opcode: TEXT, payload: 'late' }, { opcode: PING, payload: 'p' }])
  await client.nextFrame(CLOSE)
  await closed
  await waitFor(() => client.tcpClosed || client.ended, 2000, 'end')
  t.equal(client.frames.filter((f) => f.opcode === PONG).length, 0, 'no pong')
})

t.test('server closes: Close sent with code and reason, CLOSING until the peer answers, then TCP ends', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket)
  socket.close(1000, 'done')
  t.equal(socket.readyState, socket.CLOSING)
  t.equal(socket.send('nope'), false, 'send while CLOSING returns false')
  socket.close(4000, 'again') // a second close() is a no-op
  const frame = await client.nextFrame(CLOSE)
  t.equal(frame.payload.readUInt16BE(0), 1000)
  t.equal(frame.payload.subarray(2).toString(), 'done')
  await delay(30)
  t.equal(client.frames.filter((f) => f.opcode === CLOSE).length, 0, 'only one Close was sent')
  t.notOk(client.ended, 'the server waits for the answer before ending TCP')
  client.write({ opcode: CLOSE, payload: closePayload(1000) })
  await waitFor(() => client.ended, 2000, 'the server to end TCP')
  t.same(await closed, [1000, ''])
})

t.test('a peer that never answers our Close is destroyed after closeTimeout', async (t) => {
  const srv = await startServer({ closeTimeout: 300 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket)
  const start = Date.now()
  socket.close(1001)
  await client.nextFrame(CLOSE)
  const [code] = await closed
  const elapsed = Date.now() - start
  t.equal(code, 1006, 'abnormal closure: no Close came back')
  t.ok(elapsed >= 250, `not before the timeout (${elapsed} ms)`)
  t.ok(elapsed < 2000, `soon after the timeout (${elapsed} ms)`)
  await waitFor(() => client.tcpClosed, 2000, 'the TCP connection to be gone')
})

t.test('a peer that ends TCP after our Close without answering: closed at once', async (t) => {
  const srv = await startServer({ closeTimeout: 5000 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket, 2000)
  socket.close(1000)
  await client.nextFrame(CLOSE)
  client.socket.end()
  t.same(await closed, [1006, ''], 'no Close received: 1006, well before closeTimeout')
})

t.test('the peer drops TCP without a Close: close event 1006', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket)
  client.socket.destroy()
  t.same(await closed, [1006, ''])
})

t.test('close() argument errors', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  for (const ws of [server, client]) {
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535, 1000.5, NaN, -1]) {
      t.throws(() => ws.close(code), { code: 'FST_WS_INVALID_CLOSE_CODE' }, `code ${code}`)
    }
    t.throws(() => ws.close('1000' as unknown as number), { code: 'FST_WS_INVALID_CLOSE_CODE' }, 'a string code')
    t.throws(() => ws.close(1000, 'x'.repeat(124)), { code: 'FST_WS_REASON_TOO_LONG' }, '124 ASCII bytes')
    t.throws(() => ws.close(1000, '€'.repeat(42)), { code: 'FST_WS_REASON_TOO_LONG' }, '42 euro signs are 126 bytes')
    t.throws(() => ws.close(undefined, 'reason without code'), { code: 'FST_WS_INVALID_CLOSE_CODE' })
    t.equal(ws.readyState, ws.OPEN, 'still open after the rejected calls')
  }
  const serverClosed = closeOf(server)
  const clientClosed = closeOf(client)
  client.close(4999, '€'.repeat(41)) // 123 bytes: the maximum
  t.same(await serverClosed, [4999, '€'.repeat(41)], 'the server got the 123-byte reason')
  t.same(await clientClosed, [4999, ''], 'the client got the echo')
})

t.test('close handshake through injectWS, both directions', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  const sc = closeOf(server)
  const cc = closeOf(client)
  server.close(3000, 'server says bye')
  t.same(await cc, [3000, 'server says bye'])
  t.same(await sc, [3000, ''])
  t.equal(client.readyState, client.CLOSED)
  t.equal(server.readyState, server.CLOSED)
  const client2 = await srv.app.injectWS('/ws')
  const server2 = await srv.socket(1)
  const sc2 = closeOf(server2)
  const cc2 = closeOf(client2)
  client2.close()
  t.same(await sc2, [1005, ''], 'a Close without status')
  t.same(await cc2, [1005, ''])
})

t.test('ping is answered by a pong with the same payload; ping event', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const pings: string[] = []
  socket.on('ping', (d) => pings.push(d.toString('hex')))
  const payloads = [Buffer.alloc(0), Buffer.from('hello'), Buffer.alloc(125, 0xab)]
  for (const p of payloads) {
    client.write({ opcode: PING, payload: p })
    const pong = await client.nextFrame(PONG)
    t.equal(pong.payload.toString('hex'), p.toString('hex'), `pong for ${p.length} bytes`)
    t.notOk(pong.masked, 'server frames are not masked')
  }
  t.same(pings, payloads.map((p) => p.toString('hex')))
})

t.test('unsolicited pong is ignored (reported, not answered), the connection stays open', async (t) => {
  const srv = await startServer({}, (s) => { s.on('message', (d, isBinary) => s.send(d, { binary: isBinary })) })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const pongs = once<[Buffer]>(socket, 'pong')
  client.write({ opcode: PONG, payload: 'unasked' })
  t.equal((await pongs)[0].toString(), 'unasked')
  client.write({ opcode: TEXT, payload: 'still here' })
  t.equal((await client.nextFrame(TEXT)).payload.toString(), 'still here')
  t.equal(client.frames.length, 0, 'nothing else was sent')
  t.equal(socket.readyState, socket.OPEN)
})

t.test('socket.ping() sends a ping; the pong comes back as an event', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  const pong = once<[Buffer]>(server, 'pong')
  const ping = once<[Buffer]>(client, 'ping')
  server.ping('are you there')
  t.equal((await ping)[0].toString(), 'are you there', 'the client saw the ping')
  t.equal((await pong)[0].toString(), 'are you there', 'and answered it')
  t.throws(() => server.ping(Buffer.alloc(126)), { code: 'FST_WS_CONTROL_TOO_LARGE' })
  t.throws(() => server.pong(Buffer.alloc(126)), { code: 'FST_WS_CONTROL_TOO_LARGE' })
  client.close(1000)
  await closeOf(server)
  // Like send(): after close nothing is thrown, false is returned and the callback gets FST_WS_NOT_OPEN.
  const results: boolean[] = []
  const errors = await Promise.all(['ping', 'pong'].map((kind) => new Promise<Error | null | undefined>((resolve) => {
    results.push(kind === 'ping' ? server.ping('late', resolve) : server.pong('late', resolve))
  })))
  t.same(results, [false, false], 'ping() and pong() after close return false')
  t.same(errors.map((e) => (e as { code?: string } | null | undefined)?.code), ['FST_WS_NOT_OPEN', 'FST_WS_NOT_OPEN'], 'and report FST_WS_NOT_OPEN to their callbacks')
  t.throws(() => server.ping(Buffer.alloc(126)), { code: 'FST_WS_CONTROL_TOO_LARGE' }, 'an oversized payload is still a thrown API misuse')
})

t.test('terminate(): no Close frame, TCP destroyed, close event 1006', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const closed = closeOf(socket)
  socket.terminate()
  t.same(await closed, [1006, ''])
  await waitFor(() => client.tcpClosed, 2000, 'the client to see TCP go')
  t.equal(client.frames.length, 0, 'no Close frame was sent')
  socket.terminate()
  t.equal(socket.readyState, socket.CLOSED, 'a second terminate is harmless')
})

t.test('protocol error: the server sends Close 1002, emits error, ends TCP', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const error = once<[WebSocketError]>(socket, 'error')
  const closed = closeOf(socket)
  client.socket.write(Buffer.from([0x83, 0x80, 1, 2, 3, 4])) // reserved opcode 3
  const [err] = await error
  t.equal(err.code, 'FST_WS_PROTOCOL_ERROR')
  t.equal(err.closeCode, 1002)
  const frame = await client.nextFrame(CLOSE)
  t.equal(frame.payload.readUInt16BE(0), 1002)
  await waitFor(() => client.ended, 2000, 'end')
  client.socket.end()
  t.equal((await closed)[0], 1002)
})

t.test('invalid UTF-8 fails with 1007, oversized message with 1009', async (t) => {
  const srv = await startServer({ maxPayload: 100 })
  t.teardown(srv.close)
  let n = 0
  for (const [frame, code, errCode] of [
    [{ opcode: TEXT, payload: Buffer.from([0xed, 0xa0, 0x80]) }, 1007, 'FST_WS_INVALID_UTF8'],
    [{ opcode: 0x2, payload: Buffer.alloc(101) }, 1009, 'FST_WS_MESSAGE_TOO_BIG']
  ] as const) {
    const client = await RawWs.connect(srv.port, '/ws', { passive: true })
    const socket = await srv.socket(n++)
    const error = once<[WebSocketError]>(socket, 'error')
    client.write(frame)
    const [err] = await error
    t.equal(err.code, errCode)
    t.equal(err.closeCode, code)
    t.equal((await client.nextFrame(CLOSE)).payload.readUInt16BE(0), code)
    client.socket.destroy()
  }
})

t.test('heartbeat: a silent peer is pinged then terminated; an answering one stays', async (t) => {
  const srv = await startServer({ heartbeat: { interval: 100, timeout: 100 } })
  t.teardown(srv.close)
  const silent = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket = await srv.socket()
  const error = once<[WebSocketError]>(socket, 'error', 3000)
  const closed = closeOf(socket)
  await silent.nextFrame(PING, 2000)
  const [err] = await error
  t.equal(err.code, 'FST_WS_HEARTBEAT_TIMEOUT')
  t.equal((await closed)[0], 1006)

  const lively = await RawWs.connect(srv.port, '/ws', { passive: true })
  const socket2 = await srv.socket(1)
  for (let i = 0; i < 3; i++) {
    const ping = await lively.nextFrame(PING, 2000)
    lively.write({ opcode: PONG, payload: ping.payload })
  }
  t.equal(socket2.readyState, socket2.OPEN, 'still open after three rounds')
  lively.socket.destroy()
})

t.test('client role (injectWS): server closes, the client answers and the server ends', async (t) => {
  const srv = await startServer({ closeTimeout: 200 }, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  const cc = closeOf(client)
  const sc = closeOf(server)
  const start = Date.now()
  server.close(1000)
  await within(Promise.all([cc, sc]), 2000, 'both closed')
  t.ok(Date.now() - start < 150, 'closed by the handshake, not by the timer')
})

t.test('an error listener that calls close() or send() cannot change the failure', async (t) => {
  const results: unknown[] = []
  const srv = await startServer({}, (s) => {
    s.on('error', () => {
      results.push(s.readyState)
      results.push(s.send('after the error'))
      s.close(1000, 'from the listener')
    })
  })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  const closed = closeOf(server)
  client.socket.write(Buffer.from([0x81, 0x01, 0x61])) // unmasked: 1002
  const frame = await client.nextFrame(CLOSE)
  t.equal(frame.payload.readUInt16BE(0), 1002, 'the Close carries the failure code')
  t.same(results, [server.CLOSING, false], 'CLOSING already inside the listener; send() refused')
  t.equal(client.frames.filter((f) => f.opcode === TEXT).length, 0, 'no data frame after the failure')
  client.socket.end()
  t.equal((await closed)[0], 1002)
})

t.test('automatic pongs count as outbound pressure: a ping flood from a peer that never reads pauses reading', async (t) => {
  const srv = await startServer({ sendHighWaterMark: 64 * 1024, maxBufferedAmount: 1024 * 1024, drainTimeout: 0 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  client.socket.pause()
  const server = await srv.socket()
  let peak = 0
  server.on('ping', () => { peak = Math.max(peak, server.bufferedAmount) })
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => frames([{ opcode: PING, payload: Buffer.alloc(125, 1) }])))
  for (let i = 0; i < 100 && !server.rawSocket.isPaused(); i++) {
    client.socket.write(batch)
    await delay(5)
  }
  t.ok(server.rawSocket.isPaused(), 'the server stopped reading')
  t.ok(peak < 1024 * 1024, `bufferedAmount peaked at ${peak} bytes, under maxBufferedAmount`)
  t.equal(server.readyState, server.OPEN, 'still open: the peer may yet catch up')
})
