/**
 * The public socket API: send() in all its forms, callbacks and errors,
 * flush(), bufferedAmount/drain, readyState, events, errors without listeners,
 * throwing listeners, held messages, async iteration, inbound backpressure.
 */
import t from 'tap'
import { WebSocket, type WebSocketEvents } from '../../lib/socket/websocket.js'
import type { WebSocketError } from '../../lib/errors.js'
import { RawWs, frames, closePayload, startServer, once, within, delay, waitFor } from '../helpers/index.js'

const TEXT = 0x1
const BINARY = 0x2
const CLOSE = 0x8

interface Received { data: Buffer, isBinary: boolean }

function collect (ws: WebSocket): Received[] {
  const got: Received[] = []
  ws.on('message', (data, isBinary) => got.push({ data: Buffer.from(data), isBinary }))
  return got
}

function until (cond: () => boolean, ms: number, what: string): Promise<void> {
  return waitFor(cond, ms, what, 5)
}

t.test('send(): strings, Buffers, ArrayBuffers, views, and the binary option', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  const got = collect(client)
  const backing = new Uint8Array([9, 9, 1, 2, 3, 4, 5, 6, 9, 9])
  server.send('héllo')
  server.send(Buffer.from([1, 2, 3]))
  server.send(new Uint8Array([4, 5]).buffer)
  server.send(backing.subarray(2, 8)) // a view with an offset into a bigger buffer
  server.send(new DataView(backing.buffer, 4, 2))
  server.send(new Uint16Array([0x0102]))
  server.send('as binary', { binary: true })
  server.send(Buffer.from('as text'), { binary: false })
  server.send('')
  server.send(Buffer.alloc(0))
  await until(() => got.length === 10, 2000, 'ten messages')
  t.same(got.map((m) => [m.data.toString('hex'), m.isBinary]), [
    [Buffer.from('héllo').toString('hex'), false],
    ['010203', true],
    ['0405', true],
    ['010203040506', true],
    ['0304', true],
    [Buffer.from(new Uint16Array([0x0102]).buffer).toString('hex'), true],
    [Buffer.from('as binary').toString('hex'), true],
    [Buffer.from('as text').toString('hex'), false],
    ['', false],
    ['', true]
  ])
  for (const bad of [42, null, undefined, { a: 1 }, true]) {
    t.throws(() => server.send(bad as unknown as string), { code: 'FST_WS_INVALID_DATA' }, `send(${String(bad)})`)
  }
  t.equal(server.readyState, server.OPEN, 'still open')
})

t.test('send() callback: called without error once written', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  await srv.socket()
  const err = await within(new Promise<unknown>((resolve) => client.send('x', (e) => resolve(e ?? null))), 2000, 'the callback')
  t.equal(err, null)
  const err2 = await within(new Promise<unknown>((resolve) => client.send(Buffer.alloc(70000), { binary: true }, (e) => resolve(e ?? null))), 2000, 'the callback')
  t.equal(err2, null)
})

t.test('send() after close returns false and calls back with FST_WS_NOT_OPEN', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  const got = collect(server)
  const clientClosed = once(client, 'close')
  client.close(1000)
  let sync = true
  const results: Array<[boolean, unknown, boolean]> = []
  const p = new Promise<void>((resolve) => {
    const r = client.send('too late', (err) => { results.push([r, err, sync]); resolve() })
  })
  sync = false
  await within(p, 2000, 'the callback')
  const [returned, err, calledSync] = results[0]!
  t.equal(returned, false)
  t.equal((err as { code?: string }).code, 'FST_WS_NOT_OPEN')
  t.equal(calledSync, false, 'the callback is asynchronous')
  t.equal(client.send('no callback'), false, 'without a callback: false, no throw')
  await clientClosed
  t.equal(client.send('closed'), false, 'after CLOSED too')
  t.equal(got.length, 0, 'the server never received them')
})

t.test('flush() resolves once everything is handed over; rejects when closed', async (t) => {
  const srv = await startServer({ drainTimeout: 0 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  await server.flush()
  t.pass('resolves at once with nothing buffered')
  client.socket.pause() // make the bytes stay in our buffer
  for (let i = 0; i < 100; i++) server.send(Buffer.alloc(64 * 1024, i))
  t.ok(server.bufferedAmount > 0, `something is buffered (${server.bufferedAmount})`)
  let flushed = false
  const flushing = server.flush().then(() => { flushed = true })
  await delay(50)
  t.notOk(flushed, 'not resolved while the peer does not read')
  client.socket.resume()
  await within(flushing, 5000, 'flush()')
  t.equal(server.bufferedAmount, 0, 'nothing buffered when flush() resolves')
  await until(() => client.frames.length === 100, 5000, '100 frames')
  server.terminate()
  await once(server, 'close')
  await t.rejects(server.flush(), { code: 'FST_WS_NOT_OPEN' })
})

t.test('flush() while closing (TCP already ended) does not write after end', async (t) => {
  // A high-water mark big enough that the server keeps reading while its output is stuck.
  const srv = await startServer({ drainTimeout: 0, sendHighWaterMark: 64 * 1024 * 1024, maxBufferedAmount: 128 * 1024 * 1024 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  const errors: unknown[] = []
  server.rawSocket.on('error', (e) => errors.push(e))
  client.socket.pause()
  for (let i = 0; i < 100; i++) server.send(Buffer.alloc(64 * 1024, i))
  const closed = once(server, 'close', 5000)
  // A protocol error makes the server end TCP while bytes are still buffered.
  client.socket.write(Buffer.from([0x81, 0x01, 0x61]))
  await until(() => server.rawSocket.writableEnded, 2000, 'the server to end TCP')
  t.ok(server.bufferedAmount > 0, 'bytes still buffered')
  const flushing = server.flush()
  client.socket.resume()
  await within(flushing, 5000, 'flush()')
  t.pass('flush() resolved once the buffered bytes were written')
  client.socket.end()
  await closed
  t.same(errors, [], 'no write-after-end error on the socket')
})

t.test('flush() waits for messages queued behind compression', async (t) => {
  const srv = await startServer({ perMessageDeflate: { threshold: 0 } }, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws', { perMessageDeflate: true })
  const server = await srv.socket()
  t.not(server.extensions, '', 'permessage-deflate was negotiated')
  const got = collect(client)
  server.send(Buffer.alloc(200_000, 7))
  server.send('after')
  t.ok(server.bufferedAmount > 0, 'queued for compression')
  await within(server.flush(), 3000, 'flush()')
  t.equal(server.bufferedAmount, 0, 'nothing is still queued when flush() resolves')
  await until(() => got.length === 2, 3000, 'two messages')
  t.equal(got[0]!.data.length, 200_000)
  t.equal(got[1]!.data.toString(), 'after')
})

t.test('bufferedAmount, send() returning false past sendHighWaterMark, and drain', async (t) => {
  const srv = await startServer({ sendHighWaterMark: 256 * 1024, drainTimeout: 0 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  client.socket.pause() // the peer does not read
  const server = await srv.socket()
  let sent = 0
  let ok = true
  const chunk = Buffer.alloc(64 * 1024, 1)
  while (ok && sent < 1000) {
    ok = server.send(chunk)
    sent++
  }
  t.notOk(ok, `send() returned false after ${sent} messages`)
  t.ok(server.bufferedAmount > 256 * 1024, `bufferedAmount ${server.bufferedAmount} is over the high-water mark`)
  t.equal(server.readyState, server.OPEN, 'still open: under maxBufferedAmount')
  const drained = once(server, 'drain', 5000)
  client.socket.resume()
  await drained
  t.ok(server.bufferedAmount <= 256 * 1024, 'under the mark at drain')
  await until(() => client.frames.length === sent, 5000, 'every frame')
  t.equal(client.frames.length, sent, 'nothing was lost')
})

t.test('readyState constants, on the class and the instance', async (t) => {
  t.same([WebSocket.CONNECTING, WebSocket.OPEN, WebSocket.CLOSING, WebSocket.CLOSED], [0, 1, 2, 3])
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  t.same([client.CONNECTING, client.OPEN, client.CLOSING, client.CLOSED], [0, 1, 2, 3])
  t.equal(client.readyState, WebSocket.OPEN)
  client.close()
  t.equal(client.readyState, WebSocket.CLOSING)
  await once(client, 'close')
  t.equal(client.readyState, WebSocket.CLOSED)
})

t.test('typed events carry the documented arguments', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  const seen: string[] = []
  const onMessage = (data: Buffer, isBinary: boolean): void => { seen.push(`message ${typeof data.equals} ${String(isBinary)}`) }
  const onClose: (...args: WebSocketEvents['close']) => void = (code, reason) => { seen.push(`close ${code} ${reason}`) }
  server.on('message', onMessage)
  server.on('close', onClose)
  server.on('ping', (data) => seen.push(`ping ${data.toString()}`))
  client.ping('x')
  client.send('m')
  client.close(4002, 'r')
  await once(server, 'close')
  t.same(seen, ['ping x', 'message function false', 'close 4002 r'])
})

t.test('an error without a listener is logged, not thrown', async (t) => {
  const srv = await startServer({ maxPayload: 10 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  t.equal(server.listenerCount('error'), 0)
  const closed = once<[number, string]>(server, 'close')
  client.write({ opcode: BINARY, payload: Buffer.alloc(11) })
  t.equal((await client.nextFrame(CLOSE)).payload.readUInt16BE(0), 1009)
  client.socket.end()
  t.equal((await closed)[0], 1009)
  const line = srv.logs.lines.find((l) => l.err?.code === 'FST_WS_MESSAGE_TOO_BIG')
  t.ok(line, 'the error was logged')
  t.equal(line?.level, 40, 'at warn level')
})

t.test('an error listener that throws is logged', async (t) => {
  const srv = await startServer({}, (s) => { s.on('error', () => { throw new Error('listener bug') }) })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  const closed = once(server, 'close')
  client.socket.write(Buffer.from([0x81, 0x01, 0x61])) // unmasked
  await client.nextFrame(CLOSE)
  client.socket.end()
  await closed
  t.ok(srv.logs.lines.some((l) => l.err?.message === 'listener bug'), 'logged')
})

t.test('a throwing message listener closes the socket with 1011', async (t) => {
  const srv = await startServer({}, (s) => { s.on('message', () => { throw new Error('handler bug') }) })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  const closed = once<[number, string]>(server, 'close')
  client.write({ opcode: TEXT, payload: 'boom' })
  const frame = await client.nextFrame(CLOSE)
  t.equal(frame.payload.readUInt16BE(0), 1011)
  client.write({ opcode: CLOSE, payload: closePayload(1011) })
  await closed
  t.ok(srv.logs.lines.some((l) => l.level === 50 && l.err?.message === 'handler bug'), 'logged at error level')
})

t.test('messages that arrive before a listener is attached are delivered in order', async (t) => {
  const srv = await startServer({}, async (s) => {
    await delay(100)
    const got: string[] = []
    s.on('message', (d) => {
      got.push(d.toString())
      if (got.length === 5) s.send(got.join(','))
    })
  })
  t.teardown(srv.close)
  // The first two frames travel with the handshake request itself (the upgrade "head").
  const head = frames([{ opcode: TEXT, payload: '1' }, { opcode: TEXT, payload: '2' }])
  const client = await RawWs.connect(srv.port, '/ws', { passive: true, ms: 2000, head })
  client.write([{ opcode: TEXT, payload: '3' }, { opcode: BINARY, payload: '4' }])
  await delay(20)
  client.write({ opcode: TEXT, payload: '5' })
  const reply = await client.nextFrame(TEXT, 3000)
  t.equal(reply.payload.toString(), '1,2,3,4,5')
})

t.test('for await yields strings for text, Buffers for binary, and ends on close', async (t) => {
  let result: Array<string | Buffer> | null = null
  let resolveDone: () => void
  const done = new Promise<void>((resolve) => { resolveDone = resolve })
  const srv = await startServer({}, async (s) => {
    const items: Array<string | Buffer> = []
    for await (const m of s) items.push(m)
    result = items
    resolveDone()
  }, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  client.send('text')
  client.send(Buffer.from([1, 2]))
  client.send('€')
  client.close(1000)
  await within(done, 2000, 'the loop to end')
  const items = result as unknown as Array<string | Buffer>
  t.equal(items.length, 3)
  t.equal(items[0], 'text')
  t.ok(Buffer.isBuffer(items[1]) && (items[1] as Buffer).equals(Buffer.from([1, 2])))
  t.equal(items[2], '€')
})

t.test('for await: breaking out hands later messages to listeners', async (t) => {
  const srv = await startServer({}, async (s) => {
    for await (const m of s) {
      s.send(`iterated ${String(m)}`)
      break
    }
    s.on('message', (d) => s.send(`listener ${d.toString()}`))
  }, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const got = collect(client)
  client.send('a')
  client.send('b')
  await until(() => got.length === 2, 2000, 'two replies')
  t.same(got.map((m) => m.data.toString()), ['iterated a', 'listener b'])
})

t.test('inbound backpressure: a consumer that does not pull pauses the TCP socket', async (t) => {
  let release: () => void = () => {}
  const pulled = new Promise<void>((resolve) => { release = resolve })
  const srv = await startServer({ inboundHighWaterMark: 16 * 1024 }, async (s) => {
    await pulled
    let n = 0
    for await (const m of s) {
      n++
      if (n === 200) s.send(`got ${n} of ${(m as Buffer).length}`)
    }
  })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  const frame = frames([{ opcode: BINARY, payload: Buffer.alloc(4096, 1) }])
  for (let i = 0; i < 200; i++) client.socket.write(frame)
  await until(() => server.rawSocket.isPaused(), 2000, 'the socket to pause')
  t.ok(server.rawSocket.isPaused(), 'reading paused while nobody pulls')
  await delay(50)
  t.ok(server.rawSocket.isPaused(), 'and it stays paused')
  release()
  const reply = await client.nextFrame(TEXT, 5000)
  t.equal(reply.payload.toString(), 'got 200 of 4096', 'every message was delivered once pulled')
  t.notOk(server.rawSocket.isPaused(), 'reading resumed')
})

t.test('errors carry codes and close codes', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  const err = once<[WebSocketError]>(client, 'error')
  // A server that sends a masked frame: the client must fail with 1002.
  ;(server.rawSocket).write(frames([{ opcode: TEXT, payload: 'x' }]))
  const [e] = await err
  t.equal(e.code, 'FST_WS_PROTOCOL_ERROR')
  t.equal(e.closeCode, 1002)
})

t.test('inbound backpressure counts messages, not only bytes: a flood of empty messages pauses too', async (t) => {
  let release: () => void = () => {}
  const pulled = new Promise<void>((resolve) => { release = resolve })
  const srv = await startServer({ inboundHighWaterMark: 16 * 1024 }, async (s) => {
    await pulled
    let n = 0
    s.on('message', () => { if (++n === 20000) s.send(`got ${n}`) })
  })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  const empty = frames([{ opcode: BINARY }])
  client.socket.write(Buffer.concat(Array.from({ length: 20000 }, () => empty)))
  await until(() => server.rawSocket.isPaused(), 2000, 'the socket to pause')
  t.ok(server.rawSocket.isPaused(), 'reading paused by 20,000 held empty messages')
  release()
  t.equal((await client.nextFrame(TEXT, 5000)).payload.toString(), 'got 20000', 'all delivered once a listener comes')
  t.notOk(server.rawSocket.isPaused(), 'reading resumed')
})

t.test('inbound backpressure through injectWS: the in-memory stream backs up too', async (t) => {
  let release: () => void = () => {}
  const pulled = new Promise<void>((resolve) => { release = resolve })
  const srv = await startServer({ inboundHighWaterMark: 8 * 1024 }, async (s) => {
    await pulled
    let n = 0
    for await (const m of s) {
      if (++n === 300) s.send(`got ${n} of ${(m as Buffer).length}`)
    }
  }, false)
  t.teardown(srv.close)
  const client = await srv.app.injectWS('/ws')
  const server = await srv.socket()
  for (let i = 0; i < 300; i++) client.send(Buffer.alloc(1024, i))
  await delay(20)
  t.ok(server.rawSocket.isPaused(), 'the server end paused')
  t.ok(client.bufferedAmount > 0, `the client's writes backed up (${client.bufferedAmount} bytes)`)
  const reply = once<[Buffer]>(client, 'message', 3000)
  release()
  t.equal((await reply)[0].toString(), 'got 300 of 1024')
  t.equal(client.bufferedAmount, 0, 'everything went through')
})

t.test('a peer that never reads: closed with 1008 past maxBufferedAmount', async (t) => {
  const srv = await startServer({ sendHighWaterMark: 64 * 1024, maxBufferedAmount: 1024 * 1024, drainTimeout: 0, closeTimeout: 200 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  client.socket.pause()
  const server = await srv.socket()
  const error = once<[WebSocketError]>(server, 'error', 5000)
  const closed = once<[number, string]>(server, 'close', 5000)
  let sent = 0
  while (server.readyState === server.OPEN && sent < 10000) {
    server.send(Buffer.alloc(64 * 1024))
    sent++
  }
  const [err] = await error
  t.equal(err.code, 'FST_WS_SLOW_CONSUMER')
  t.equal(err.closeCode, 1008)
  t.equal((await closed)[0], 1008)
})

t.test('a peer that stays over sendHighWaterMark longer than drainTimeout: closed with 1008', async (t) => {
  const srv = await startServer({ sendHighWaterMark: 64 * 1024, drainTimeout: 200, closeTimeout: 200 })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  client.socket.pause()
  const server = await srv.socket()
  const error = once<[WebSocketError]>(server, 'error', 5000)
  const start = Date.now()
  // Fill the kernel's buffers too (frames reach the socket a tick after send()), then stay over the mark.
  for (let i = 0; i < 2000; i++) {
    if (server.send(Buffer.alloc(64 * 1024))) {
      await new Promise((resolve) => setImmediate(resolve))
      continue
    }
    await delay(20)
    if (server.bufferedAmount > 64 * 1024) break
  }
  const [err] = await error
  t.equal(err.code, 'FST_WS_SLOW_CONSUMER')
  t.ok(Date.now() - start >= 150, 'after the drain timeout')
  await once(server, 'close', 3000)
})

t.test('pong() sends an unsolicited pong; a throwing close listener is logged', async (t) => {
  const srv = await startServer({}, (s) => { s.on('close', () => { throw new Error('close listener bug') }) })
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  server.pong('heartbeat')
  t.equal((await client.nextFrame(0xa)).payload.toString(), 'heartbeat')
  client.write({ opcode: CLOSE, payload: closePayload(1000) })
  await until(() => client.ended, 2000, 'end')
  await until(() => server.readyState === server.CLOSED, 2000, 'CLOSED')
  await delay(10)
  t.ok(srv.logs.lines.some((l) => l.err?.message === 'close listener bug'), 'logged, not thrown')
})

t.test('topics on a socket: subscribe, publish, unsubscribe, released on close', async (t) => {
  const srv = await startServer({}, () => {}, false)
  t.teardown(srv.close)
  const a = await srv.app.injectWS('/ws')
  const b = await srv.app.injectWS('/ws')
  const sa = await srv.socket(0)
  const sb = await srv.socket(1)
  const gotA = collect(a)
  const gotB = collect(b)
  t.match(await sa.subscribe('news'), { status: 'live', topic: 'news', offset: 0 })
  t.same(await sa.subscribe('news'), { status: 'unchanged', topic: 'news' }, 'a second subscribe does nothing')
  await sb.subscribe('news')
  t.ok(sa.isSubscribed('news'))
  t.same([...sa.topics], ['news'])
  t.match(await srv.app.websocketServer.publish('news', 'hello'), { topic: 'news', offset: 1 })
  t.match(await srv.app.websocketServer.publish('news', Buffer.from([1]), { except: sa }), { offset: 2 })
  await until(() => gotA.length === 1 && gotB.length === 2, 2000, 'published messages')
  t.same(gotB.map((m) => [m.data.toString('hex'), m.isBinary]), [[Buffer.from('hello').toString('hex'), false], ['01', true]])
  sb.unsubscribe('news')
  sb.unsubscribe('news')
  t.equal(srv.app.websocketServer.subscriberCount('news'), 1)
  t.throws(() => sa.subscribe(''), { code: 'FST_WS_INVALID_TOPIC' })
  t.throws(() => a.subscribe('x'), { code: 'FST_WS_INVALID_TOPIC' }, 'client sockets have no topics')
  const closed = once(sa, 'close')
  a.close()
  await closed
  t.equal(srv.app.websocketServer.subscriberCount('news'), 0, 'a closed socket leaves its topics')
  t.same(await sa.subscribe('late'), { status: 'cancelled', topic: 'late' })
  t.equal(srv.app.websocketServer.subscriberCount('late'), 0, 'a closed socket cannot subscribe')
})

t.test('terminate() right after send(): the unwritten frame is dropped and its callback gets an error', async (t) => {
  const srv = await startServer({})
  t.teardown(srv.close)
  const client = await RawWs.connect(srv.port, '/ws', { passive: true })
  const server = await srv.socket()
  const result = new Promise<Error | null | undefined>((resolve) => { server.send('last words', (err) => resolve(err)) })
  server.terminate()
  const err = await within(result, 2000, 'send callback')
  t.ok(err instanceof Error, `the callback reports the loss: ${String(err)}`)
  await once(server, 'close')
  await until(() => client.ended || client.socket.destroyed, 2000, 'client sees the connection go')
  t.equal(client.frames.length, 0, 'nothing reached the client')
})
