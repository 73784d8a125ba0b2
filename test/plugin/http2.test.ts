// WebSockets over HTTP/2 (RFC 8441) with a raw node:http2 client: the extended CONNECT written by hand, the
// SETTINGS advertisement rule, the three server modes (TLS with and without allowHTTP1, cleartext h2c), Fastify's
// hooks and the handshake policies on a stream, many WebSockets on one session, and the HTTP/1.1 upgrade on the
// same TLS server (allowHTTP1) answered by the same route.
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import { inflateRawSync, constants as zlib } from 'node:zlib'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import WebSocketClient from 'ws'
import type { WebSocket, WebSocketPluginOptions } from '../../lib/index.js'
import { buildApp, listen, within, waitFor, frame, parseClose, type LogCapture } from '../helpers/index.js'
import { selfSignedCert, connectH2, connectRequest, openH2Ws, wsConnectHeaders, H2Ws } from '../helpers/http2-client.js'

type Mode = 'tls' | 'tls-h2-only' | 'h2c'

interface H2Server {
  app: FastifyInstance
  logs: LogCapture
  port: number
  authority: string
  scheme: 'http' | 'https'
  url: string
  /** Server-side sockets of /echo, in arrival order, with what each saw. */
  sockets: Array<{ socket: WebSocket, httpVersion: string, method: string, closes: Array<[number, string]> }>
}

function fastifyOptions (mode: Mode): FastifyServerOptions {
  if (mode === 'h2c') return { http2: true } as unknown as FastifyServerOptions
  const { key, cert } = selfSignedCert()
  // unknownProtocolTimeout: how long an HTTP/1.1-only TLS client is kept on an HTTP/2-only server (Node: 10 s).
  return { http2: true, https: { key, cert, allowHTTP1: mode === 'tls', unknownProtocolTimeout: 200 } } as unknown as FastifyServerOptions
}

async function h2Server (t: Test, mode: Mode, options: WebSocketPluginOptions = {}, routes?: (app: FastifyInstance) => void): Promise<H2Server> {
  const { app, logs } = await buildApp(options, fastifyOptions(mode))
  const sockets: H2Server['sockets'] = []
  app.get('/echo', { websocket: { protocols: ['chat.v2', 'chat.v1'], protocolRequired: false } }, (socket, request) => {
    const entry = { socket, httpVersion: request.raw.httpVersion, method: request.method, closes: [] as Array<[number, string]> }
    sockets.push(entry)
    socket.on('message', (data, isBinary) => { socket.send(data, { binary: isBinary }) })
    socket.on('close', (code, reason) => entry.closes.push([code, reason]))
  })
  if (routes !== undefined) routes(app)
  const port = await listen(app)
  t.teardown(() => within(app.close(), 10_000, 'app.close()'))
  const scheme = mode === 'h2c' ? 'http' : 'https'
  return { app, logs, port, authority: `127.0.0.1:${port}`, scheme, url: `${scheme}://127.0.0.1:${port}`, sockets }
}

async function session (t: Test, s: H2Server) {
  const c = await connectH2(s.url)
  t.teardown(() => { c.session.destroy() })
  return c
}

async function echoOnce (t: Test, ws: H2Ws, text: string): Promise<void> {
  ws.send(text)
  const m = await ws.nextMessage()
  t.equal(m.payload.toString(), text, `echo of ${text}`)
}

for (const mode of ['tls', 'tls-h2-only', 'h2c'] as const) {
  t.test(`${mode}: extended CONNECT opens the route's WebSocket on a stream`, async (t) => {
    const s = await h2Server(t, mode)
    const { session: h2, settings } = await session(t, s)
    t.equal(settings.enableConnectProtocol, true, 'SETTINGS_ENABLE_CONNECT_PROTOCOL advertised')
    const ws = await openH2Ws(h2, s.authority, '/echo', s.scheme, { 'sec-websocket-protocol': 'chat.v1, chat.v2' })
    t.equal(ws.status, 200, '200, not 101')
    t.equal(ws.headers['sec-websocket-accept'], undefined, 'no Sec-WebSocket-Accept over HTTP/2')
    t.equal(ws.headers['sec-websocket-protocol'], 'chat.v2', "the server's preferred protocol among those offered")
    await echoOnce(t, ws, 'hello over h2')
    const big = Buffer.alloc(200_000, 7)
    ws.send(big)
    const echoed = await ws.nextMessage()
    t.ok(echoed.payload.equals(big), '200 KB binary message across many DATA frames')
    t.equal(s.sockets[0]!.httpVersion, '2.0', 'the handler sees an HTTP/2 request')
    t.equal(s.sockets[0]!.method, 'GET', 'routed as the GET route')
    t.equal(s.sockets[0]!.socket.protocol, 'chat.v2')
    t.equal((s.sockets[0]!.socket.rawSocket as unknown as { session?: unknown }).session !== undefined, true, 'rawSocket is the Http2Stream')
    ws.close(1000, 'bye')
    await ws.waitClosed()
    t.equal(ws.closeCode, 1000, 'the server echoed our Close')
    t.equal(ws.stream.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the stream ended cleanly (no error code)')
    await waitFor(() => s.sockets[0]!.closes.length === 1, 3000, 'server close')
    t.same(s.sockets[0]!.closes, [[1000, 'bye']])
    t.equal(h2.closed || h2.destroyed, false, 'the session stays open after the WebSocket closed')
    await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', s.scheme), 'a second WebSocket on the same session')
  })
}

t.test('SETTINGS_ENABLE_CONNECT_PROTOCOL is not advertised by an app without WebSocket routes', async (t) => {
  const { app } = await buildApp({}, fastifyOptions('h2c'))
  app.get('/plain', async () => ({ ok: true }))
  const port = await listen(app)
  t.teardown(() => app.close())
  const { session: h2, settings } = await connectH2(`http://127.0.0.1:${port}`)
  t.teardown(() => { h2.destroy() })
  t.equal(settings.enableConnectProtocol, false)
  const res = await connectRequest(h2, { ':path': '/plain' })
  t.equal(res.status, 200, 'plain HTTP/2 requests are served as before')
  res.stream.close()
})

t.test('allowHTTP1: the same route answers an HTTP/1.1 upgrade on the same TLS server', async (t) => {
  const s = await h2Server(t, 'tls')
  const client = new WebSocketClient(`wss://127.0.0.1:${s.port}/echo`, ['chat.v1'], { rejectUnauthorized: false })
  t.teardown(() => client.terminate())
  await within(new Promise((resolve, reject) => { client.once('open', resolve); client.once('error', reject) }), 5000, 'wss open')
  t.equal(client.protocol, 'chat.v1')
  client.send('over http/1.1')
  const [data] = await within(new Promise<[Buffer]>((resolve) => client.once('message', (d: Buffer) => resolve([d]))), 3000, 'message')
  t.equal(data.toString(), 'over http/1.1')
  t.equal(s.sockets[0]!.httpVersion, '1.1')
  // And an HTTP/2 WebSocket on the same server at the same time.
  const { session: h2 } = await session(t, s)
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', s.scheme), 'alongside')
  t.equal(s.sockets[1]!.httpVersion, '2.0')
  const closed = within(new Promise<number>((resolve) => client.once('close', (code: number) => resolve(code))), 3000, 'wss close')
  client.close(1000)
  t.equal(await closed, 1000)
})

t.test('allowHTTP1 false: HTTP/1.1 clients cannot connect, HTTP/2 ones can', async (t) => {
  const s = await h2Server(t, 'tls-h2-only')
  const client = new WebSocketClient(`wss://127.0.0.1:${s.port}/echo`, { rejectUnauthorized: false })
  t.teardown(() => client.terminate())
  const failed = await within(new Promise<boolean>((resolve) => {
    client.once('open', () => resolve(false))
    client.once('error', () => resolve(true))
  }), 5000, 'wss failure')
  t.equal(failed, true, 'the HTTP/1.1 handshake fails')
  const { session: h2 } = await session(t, s)
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', s.scheme), 'h2 only')
})

t.test("Fastify's router and hooks run first: a hook's 401 is the stream's response", async (t) => {
  const seen: Array<{ method: string, params: unknown, query: unknown, protocol: unknown }> = []
  const s = await h2Server(t, 'h2c', {}, (app) => {
    app.get('/rooms/:room', {
      websocket: true,
      onRequest: async (request, reply) => {
        seen.push({ method: request.method, params: request.params, query: request.query, protocol: request.headers[':protocol'] })
        if (request.headers.authorization !== 'Bearer ok') return reply.code(401).send({ message: 'log in first' })
      }
    }, (socket, request) => {
      socket.send(`room ${(request.params as { room: string }).room}`)
    })
  })
  const { session: h2 } = await session(t, s)
  const refused = await connectRequest(h2, wsConnectHeaders(s.authority, '/rooms/42?x=1', 'http'))
  t.equal(refused.status, 401, "the hook's status")
  const body = await within(readAll(refused.stream), 3000, 'body')
  t.match(JSON.parse(body), { message: 'log in first' }, "the hook's body")
  t.same(seen[0], { method: 'GET', params: { room: '42' }, query: { x: '1' }, protocol: 'websocket' })
  const ws = await openH2Ws(h2, s.authority, '/rooms/7', 'http', { authorization: 'Bearer ok' })
  t.equal((await ws.nextMessage()).payload.toString(), 'room 7', 'params reach the handler')
})

function readAll (stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let text = ''
    stream.on('data', (c: Buffer) => { text += c.toString() })
    stream.on('end', () => resolve(text))
    stream.on('close', () => resolve(text))
  })
}

t.test('invalid CONNECTs get precise statuses', async (t) => {
  const s = await h2Server(t, 'h2c', {}, (app) => {
    app.get('/plain', async () => ({ plain: true }))
  })
  const { session: h2 } = await session(t, s)
  const tunnel = await connectRequest(h2, { ':method': 'CONNECT', ':authority': s.authority })
  t.equal(tunnel.status, 405, 'a CONNECT without :protocol (a proxy tunnel) is not accepted')
  tunnel.stream.close()
  const other = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http', { ':protocol': 'connect-udp' }))
  t.equal(other.status, 501, 'another :protocol')
  other.stream.close()
  for (const [version, what] of [[null, 'no version'], ['8', 'version 8'], ['13, 8', 'a list']] as const) {
    const res = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http', { 'sec-websocket-version': version }))
    t.equal(res.status, 426, `426 for ${what}`)
    t.equal(res.headers['sec-websocket-version'], '13', 'naming the version we speak')
    t.equal(res.headers.connection, undefined, 'no Connection field in HTTP/2')
    res.stream.close()
  }
  const length = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http', { 'content-length': '5' }))
  t.equal(length.status, 400, 'a declared length')
  length.stream.close()
  const plain = await connectRequest(h2, wsConnectHeaders(s.authority, '/plain', 'http'))
  t.equal(plain.status, 400, 'a plain route never answers an extended CONNECT with 2xx')
  t.match(JSON.parse(await within(readAll(plain.stream), 3000, 'body')), { message: 'This route does not accept WebSocket connections' })
  const missing = await connectRequest(h2, wsConnectHeaders(s.authority, '/nowhere', 'http'))
  t.equal(missing.status, 404, 'no route: 404')
  missing.stream.close()
  t.equal(s.sockets.length, 0, 'no socket was opened')
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', 'http'), 'the session is still usable')
})

t.test('Origin allowlist and port policy apply to streams', async (t) => {
  t.test('same-origin by default, against :authority', async (t) => {
    const s = await h2Server(t, 'tls')
    const { session: h2 } = await session(t, s)
    const refused = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'https', { origin: 'https://evil.example' }))
    t.equal(refused.status, 403, 'a cross-site origin is refused')
    refused.stream.close()
    const otherPort = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'https', { origin: 'https://127.0.0.1' }))
    t.equal(otherPort.status, 403, 'same host, another port: refused')
    otherPort.stream.close()
    const ws = await openH2Ws(h2, s.authority, '/echo', 'https', { origin: `https://${s.authority}` })
    await echoOnce(t, ws, 'same origin')
  })
  t.test('an allowlist', async (t) => {
    const s = await h2Server(t, 'h2c', { origins: ['https://app.example'], requireOrigin: true })
    const { session: h2 } = await session(t, s)
    for (const headers of [{ origin: 'https://evil.example' }, {}] as Array<Record<string, string>>) {
      const res = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http', headers))
      t.equal(res.status, 403, `refused: ${JSON.stringify(headers)}`)
      res.stream.close()
    }
    await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', 'http', { origin: 'https://app.example' }), 'allowed origin')
  })
  t.test('ports: the local port of the session', async (t) => {
    const s = await h2Server(t, 'h2c', { ports: [1] })
    const { session: h2 } = await session(t, s)
    const res = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http'))
    t.equal(res.status, 403)
    t.match(JSON.parse(await within(readAll(res.stream), 3000, 'body')).message, `not accepted on port ${s.port}`)
  })
})

t.test('subprotocol and permessage-deflate negotiation through the RFC 8441 headers', async (t) => {
  const s = await h2Server(t, 'h2c', { perMessageDeflate: { threshold: 0 } })
  const { session: h2 } = await session(t, s)
  const strict = await connectRequest(h2, wsConnectHeaders(s.authority, '/strict', 'http', { 'sec-websocket-protocol': 'chat.v3' }))
  t.equal(strict.status, 404, 'unknown route first')
  strict.stream.close()
  const ws = await openH2Ws(h2, s.authority, '/echo', 'http', {
    'sec-websocket-protocol': 'chat.v3',
    'sec-websocket-extensions': 'permessage-deflate; client_max_window_bits'
  })
  t.equal(ws.headers['sec-websocket-protocol'], undefined, 'no protocol the client did not offer')
  t.match(String(ws.headers['sec-websocket-extensions']), /^permessage-deflate/, 'deflate negotiated')
  ws.send('plain text from a client that compresses nothing')
  const reply = await ws.nextMessage()
  t.equal(reply.rsv1, true, 'the server compressed its reply')
  const inflated = inflateRawSync(Buffer.concat([reply.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.Z_SYNC_FLUSH })
  t.equal(inflated.toString(), 'plain text from a client that compresses nothing')
  const malformed = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http', { 'sec-websocket-extensions': 'permessage-deflate; ;' }))
  t.equal(malformed.status, 400, 'a malformed extensions header')
  malformed.stream.close()
})

t.test('maxConnections counts streams', async (t) => {
  const s = await h2Server(t, 'h2c', { maxConnections: 2 })
  const { session: h2 } = await session(t, s)
  const a = await openH2Ws(h2, s.authority, '/echo', 'http')
  await openH2Ws(h2, s.authority, '/echo', 'http')
  const third = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http'))
  t.equal(third.status, 503, 'the third stream is refused')
  third.stream.close()
  a.close(1000, '', true)
  await a.waitClosed()
  await waitFor(() => s.app.websocketServer.clients.size === 1, 3000, 'release')
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', 'http'), 'a freed slot is reused')
})

t.test('many WebSockets on one session; closing one never closes its siblings', async (t) => {
  const s = await h2Server(t, 'tls')
  const { session: h2 } = await session(t, s)
  const sockets: H2Ws[] = []
  for (let i = 0; i < 50; i++) sockets.push(await openH2Ws(h2, s.authority, '/echo', 'https'))
  for (let i = 0; i < 50; i++) sockets[i]!.send(`message ${i}`)
  let ok = 0
  for (let i = 0; i < 50; i++) if ((await sockets[i]!.nextMessage()).payload.toString() === `message ${i}`) ok++
  t.equal(ok, 50, 'each stream got its own echo')
  // Closing handshake on one, a reset on another.
  sockets[0]!.close(1000, '', false)
  await sockets[0]!.waitClosed()
  sockets[1]!.stream.close(http2.constants.NGHTTP2_CANCEL)
  await sockets[1]!.waitClosed()
  await waitFor(() => s.sockets[0]!.closes.length === 1 && s.sockets[1]!.closes.length === 1, 3000, 'two closes')
  t.same(s.sockets[0]!.closes, [[1000, '']], 'Close frame: 1000')
  t.same(s.sockets[1]!.closes, [[1006, '']], 'RST_STREAM: 1006')
  let still = 0
  for (let i = 2; i < 50; i++) {
    sockets[i]!.send(`again ${i}`)
    if ((await sockets[i]!.nextMessage()).payload.toString() === `again ${i}`) still++
  }
  t.equal(still, 48, 'the 48 siblings still echo')
  t.equal(s.app.websocketServer.clients.size, 48)
})

t.test('RST_STREAM in the middle of a message is 1006 for that socket only', async (t) => {
  const s = await h2Server(t, 'h2c')
  const { session: h2 } = await session(t, s)
  const victim = await openH2Ws(h2, s.authority, '/echo', 'http')
  const sibling = await openH2Ws(h2, s.authority, '/echo', 'http')
  const whole = frame(0x2, Buffer.alloc(100_000, 1))
  victim.stream.write(whole.subarray(0, 40_000))
  await waitFor(() => s.sockets.length === 2, 3000, 'sockets')
  victim.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
  await waitFor(() => s.sockets[0]!.closes.length === 1, 3000, 'victim close')
  t.same(s.sockets[0]!.closes, [[1006, '']])
  await echoOnce(t, sibling, 'sibling unaffected')
})

t.test('a lost session is 1006 on every socket of that session, and only that session', async (t) => {
  const s = await h2Server(t, 'h2c')
  const one = await session(t, s)
  const two = await session(t, s)
  await openH2Ws(one.session, s.authority, '/echo', 'http')
  await openH2Ws(one.session, s.authority, '/echo', 'http')
  const other = await openH2Ws(two.session, s.authority, '/echo', 'http')
  one.session.destroy() // the TCP connection ends under both WebSockets
  await waitFor(() => s.sockets[0]!.closes.length === 1 && s.sockets[1]!.closes.length === 1, 3000, 'closes')
  t.same([s.sockets[0]!.closes, s.sockets[1]!.closes], [[[1006, '']], [[1006, '']]])
  t.same(s.sockets[2]!.closes, [], 'the other session keeps its socket')
  await echoOnce(t, other, 'other session')
})

t.test('app.close(): Close 1001 on every stream, then GOAWAY', async (t) => {
  const s = await h2Server(t, 'tls')
  const { session: h2 } = await session(t, s)
  const a = await openH2Ws(h2, s.authority, '/echo', 'https')
  const b = await openH2Ws(h2, s.authority, '/echo', 'https')
  const goaway = within(new Promise<number>((resolve) => h2.once('goaway', (code: number) => resolve(code))), 8000, 'GOAWAY')
  const closing = s.app.close()
  await a.waitClosed()
  await b.waitClosed()
  t.equal(a.closeCode, 1001)
  t.equal(b.closeCode, 1001)
  t.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR, 'GOAWAY (no error) once the WebSockets are closed')
  await within(closing, 8000, 'app.close() resolves')
  t.same(s.sockets.map((x) => x.closes[0]?.[0]), [1001, 1001])
})

t.test('a refused CONNECT during shutdown', async (t) => {
  const s = await h2Server(t, 'h2c', { closeTimeout: 2000 })
  const { session: h2 } = await session(t, s)
  const open = await openH2Ws(h2, s.authority, '/echo', 'http')
  open.answerClose = false // hold shutdown while we try a new stream
  const closing = s.app.close()
  await open.until(() => open.closeCode !== null, 'server Close')
  const late = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http'))
  t.equal(late.status, 503, 'no new WebSocket while shutting down')
  late.stream.close()
  open.stream.end(frame(0x8, Buffer.from([0x03, 0xe9])))
  await within(closing, 8000, 'app.close()')
})

t.test('frame layer over a stream: fragments, pings, and protocol errors close with the right code', async (t) => {
  const s = await h2Server(t, 'h2c', { maxPayload: 1000 })
  const { session: h2 } = await session(t, s)
  const ws = await openH2Ws(h2, s.authority, '/echo', 'http')
  ws.stream.write(Buffer.concat([frame(0x1, 'frag', { fin: false }), frame(0x9, 'ping!'), frame(0x0, 'mented')]))
  t.equal((await ws.nextMessage()).payload.toString(), 'fragmented', 'fragments joined around a ping')
  t.ok(ws.frames.some((f) => f.opcode === 0xA && f.payload.toString() === 'ping!'), 'pong with the ping payload')
  const cases: Array<[string, Buffer, number]> = [
    ['unmasked frame', frame(0x1, 'x', { mask: false }), 1002],
    ['invalid UTF-8', frame(0x1, Buffer.from([0xc3, 0x28])), 1007],
    ['over maxPayload', frame(0x2, Buffer.alloc(1001)), 1009],
    ['reserved opcode', frame(0x3, 'x'), 1002]
  ]
  for (const [what, bytes, code] of cases) {
    const victim = await openH2Ws(h2, s.authority, '/echo', 'http')
    victim.stream.write(bytes)
    await victim.waitClosed()
    t.equal(victim.closeCode, code, `${what}: ${code}`)
  }
  const close = frame(0x8, Buffer.from([0x03, 0xe8]))
  ws.stream.write(close)
  await ws.waitClosed()
  t.equal(parseClose(Buffer.from([0x03, 0xe8])).code, ws.closeCode)
})

t.test('flow control: a stream that never reads stalls only itself; backpressure is send() false, then drain', async (t) => {
  const chunk = Buffer.alloc(16 * 1024, 1)
  const flood = { sent: 0, accepted: 0, bufferedAtFalse: 0, drained: false, closes: [] as number[] }
  const s = await h2Server(t, 'tls', {}, (app) => {
    app.get('/flood', { websocket: { sendHighWaterMark: 256 * 1024, drainTimeout: 0 } }, (socket) => {
      socket.on('close', (code) => flood.closes.push(code))
      socket.on('message', () => {
        // Bounded: 4,000 x 16 KiB = 62.5 MiB would be sent if backpressure never came.
        while (flood.sent < 4000) {
          flood.sent++
          if (!socket.send(chunk)) break
          flood.accepted++
        }
        flood.bufferedAtFalse = socket.bufferedAmount
        socket.once('drain', () => { flood.drained = true })
      })
    })
  })
  const { session: h2 } = await session(t, s)
  // The stalled stream: no 'data' listener, so the client never reads and never opens its stream window.
  const stalled = await connectRequest(h2, wsConnectHeaders(s.authority, '/flood', 'https'))
  t.equal(stalled.status, 200)
  stalled.stream.write(frame(0x1, 'go'))
  await waitFor(() => flood.sent > 0, 3000, 'flood started')
  t.ok(flood.sent < 4000, `send() returned false after ${flood.sent} messages`)
  t.ok(flood.bufferedAtFalse > 256 * 1024, `bufferedAmount over the mark when it did (${flood.bufferedAtFalse})`)
  // A sibling on the same session keeps flowing, in both directions, while the other is stalled.
  const sibling = await openH2Ws(h2, s.authority, '/echo', 'https')
  const payload = Buffer.alloc(8 * 1024, 2)
  let echoed = 0
  for (let i = 0; i < 200; i++) {
    sibling.send(payload)
    if ((await sibling.nextMessage()).payload.length === payload.length) echoed++
  }
  t.equal(echoed, 200, '200 x 8 KiB echoed on the sibling (1.6 MB, far beyond the stalled stream\'s window)')
  t.equal(flood.drained, false, 'no drain while the peer does not read')
  // The peer starts reading: the window opens, the buffer drains.
  let received = 0
  stalled.stream.on('data', (c: Buffer) => { received += c.length })
  await waitFor(() => flood.drained, 5000, 'drain')
  t.ok(received > flood.accepted * chunk.length, 'everything accepted before the mark arrived')
  t.same(flood.closes, [], 'the slow socket was not closed (drainTimeout 0)')
})

t.test('slow-consumer policy on a stream: drainTimeout closes it with 1008, its sibling is untouched', async (t) => {
  const closes: number[] = []
  const s = await h2Server(t, 'h2c', { closeTimeout: 300 }, (app) => {
    app.get('/flood', { websocket: { sendHighWaterMark: 64 * 1024, drainTimeout: 200 } }, (socket) => {
      socket.on('close', (code) => closes.push(code))
      socket.on('error', () => {})
      socket.on('message', () => {
        for (let i = 0; i < 100 && socket.send(Buffer.alloc(16 * 1024)); i++);
      })
    })
  })
  const { session: h2 } = await session(t, s)
  const stalled = await connectRequest(h2, wsConnectHeaders(s.authority, '/flood', 'http'))
  stalled.stream.write(frame(0x1, 'go'))
  const sibling = await openH2Ws(h2, s.authority, '/echo', 'http')
  await waitFor(() => closes.length === 1, 5000, 'slow consumer closed')
  t.same(closes, [1008])
  await echoOnce(t, sibling, 'sibling after the slow one was closed')
})

t.test('a client that leaves during the handshake: nothing is opened, nothing leaks', async (t) => {
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  let serverStream: { destroyed: boolean } | null = null
  // The origin check is asynchronous: the reset arrives after Fastify ran the handler, before the 200.
  const s = await h2Server(t, 'h2c', {}, (app) => {
    app.get('/slow', {
      websocket: { origins: async () => { await gate; return true } },
      onRequest: async (request) => { serverStream = (request.raw as unknown as http2.Http2ServerRequest).stream }
    }, () => { t.fail('the handler must not run') })
  })
  const { session: h2 } = await session(t, s)
  const stream = h2.request(wsConnectHeaders(s.authority, '/slow', 'http', { origin: 'https://any.example' }), { endStream: false })
  stream.on('error', () => {})
  await waitFor(() => serverStream !== null, 3000, 'request routed')
  stream.close(http2.constants.NGHTTP2_CANCEL)
  await waitFor(() => serverStream!.destroyed, 3000, 'the server saw the reset')
  release()
  await waitFor(() => s.logs.find('abandoned').length === 1, 3000, 'abandoned log')
  t.equal(s.app.websocketServer.clients.size, 0)
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', 'http'), 'the session goes on')
})

t.test('handshakeTimeout resets a stream whose hooks never finish', async (t) => {
  const s = await h2Server(t, 'h2c', { handshakeTimeout: 100 }, (app) => {
    app.get('/stuck', { websocket: true, onRequest: () => new Promise<void>(() => {}) }, () => {})
  })
  const { session: h2 } = await session(t, s)
  const stream = h2.request(wsConnectHeaders(s.authority, '/stuck', 'http'), { endStream: false })
  stream.on('error', () => {})
  await within(new Promise((resolve) => stream.once('close', resolve)), 3000, 'stream reset')
  t.not(stream.rstCode, undefined, `RST_STREAM (code ${stream.rstCode})`)
  t.equal(s.logs.find('timed out').length, 1)
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', 'http'), 'the session goes on')
})

t.test("a refusal ends the stream by itself (no stream left half-open on the server)", async (t) => {
  const s = await h2Server(t, 'h2c', { origins: ['https://app.example'] })
  const { session: h2 } = await session(t, s)
  const res = await connectRequest(h2, wsConnectHeaders(s.authority, '/echo', 'http', { origin: 'https://evil.example' }))
  t.equal(res.status, 403)
  res.stream.resume()
  await within(new Promise((resolve) => res.stream.once('close', resolve)), 3000, 'the refused stream closes without the client closing it')
  t.pass('closed')
})

t.test("Fastify's http2SessionTimeout: an idle session's GOAWAY leaves its open WebSockets working", async (t) => {
  const { app } = await buildApp({}, { ...fastifyOptions('h2c'), http2SessionTimeout: 200 } as FastifyServerOptions)
  app.get('/echo', { websocket: true }, (socket) => { socket.on('message', (d, b) => socket.send(d, { binary: b })) })
  const port = await listen(app)
  t.teardown(() => within(app.close(), 10_000, 'app.close()'))
  const { session: h2 } = await connectH2(`http://127.0.0.1:${port}`)
  t.teardown(() => { h2.destroy() })
  const ws = await openH2Ws(h2, `127.0.0.1:${port}`, '/echo', 'http')
  const goaway = await within(new Promise<boolean>((resolve) => h2.once('goaway', () => resolve(true))), 3000, 'GOAWAY on idle')
  t.equal(goaway, true)
  await echoOnce(t, ws, 'after the idle GOAWAY')
  ws.close(1000, '', false)
  await ws.waitClosed()
})

t.test('other CONNECTs: left to the app\'s own connect listener, or answered as Node would', async (t) => {
  t.test('an HTTP/1.1 CONNECT on an allowHTTP1 server gets 405 and is closed', async (t) => {
    const s = await h2Server(t, 'tls')
    const tls = await import('node:tls')
    const socket = tls.connect({ host: '127.0.0.1', port: s.port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
    t.teardown(() => socket.destroy())
    socket.on('error', () => {})
    let text = ''
    socket.on('data', (c: Buffer) => { text += c.toString() })
    await within(new Promise((resolve) => socket.once('secureConnect', resolve)), 3000, 'TLS')
    socket.write(`CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`)
    await within(new Promise((resolve) => socket.once('close', resolve)), 3000, 'connection closed')
    t.match(text, /^HTTP\/1\.1 405 /)
  })
  t.test('a classic CONNECT goes to the app\'s own listener; WebSocket ones still to the route', async (t) => {
    const tunnels: string[] = []
    const s = await h2Server(t, 'h2c', {}, (app) => {
      app.server.on('connect', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
        if (req.headers[':protocol'] !== undefined) return
        tunnels.push(String(req.headers[':authority']))
        res.writeHead(200)
        res.end('tunnel')
      })
    })
    const { session: h2 } = await session(t, s)
    const tunnel = await connectRequest(h2, { ':method': 'CONNECT', ':authority': 'upstream.example:443' })
    t.equal(tunnel.status, 200, "the app's listener answered")
    t.same(tunnels, ['upstream.example:443'])
    tunnel.stream.close()
    await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', 'http'), 'WebSocket CONNECT still routed')
    t.equal(tunnels.length, 1, 'and not seen as a tunnel')
  })
})

t.test('topics and heartbeat work on a stream like on a TCP connection', async (t) => {
  const s = await h2Server(t, 'h2c', { heartbeat: { interval: 50, timeout: 200 } }, (app) => {
    app.get('/feed', { websocket: true }, async (socket) => {
      await socket.subscribe('news')
      socket.send('subscribed')
    })
  })
  const { session: h2 } = await session(t, s)
  const a = await openH2Ws(h2, s.authority, '/feed', 'http')
  const b = await openH2Ws(h2, s.authority, '/feed', 'http')
  t.equal((await a.nextMessage()).payload.toString(), 'subscribed')
  t.equal((await b.nextMessage()).payload.toString(), 'subscribed')
  await s.app.websocketServer.publish('news', 'one frame, two streams')
  t.equal((await a.nextMessage()).payload.toString(), 'one frame, two streams')
  t.equal((await b.nextMessage()).payload.toString(), 'one frame, two streams')
  // Idle sockets are pinged; the client's pongs keep them open.
  await a.until(() => a.frames.some((f) => f.opcode === 0x9), 'a heartbeat ping', 3000)
  t.pass('pinged over the stream')
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', 'http'), 'still open after heartbeats')
  t.equal(a.closed || b.closed, false, 'answered pings keep the sockets open')
})

t.test('a client sending :protocol to a server that did not advertise it never reaches the app', async (t) => {
  const { app } = await buildApp({}, fastifyOptions('h2c'))
  let reached = 0
  app.addHook('onRequest', async () => { reached++ })
  app.get('/plain', async () => ({ ok: true }))
  const port = await listen(app)
  t.teardown(() => app.close())
  const { session: h2, settings } = await connectH2(`http://127.0.0.1:${port}`)
  t.teardown(() => { h2.destroy() })
  t.equal(settings.enableConnectProtocol, false)
  const stream = h2.request(wsConnectHeaders(`127.0.0.1:${port}`, '/plain', 'http'), { endStream: false })
  stream.on('error', () => {})
  await within(new Promise((resolve) => stream.once('close', resolve)), 3000, 'stream closed')
  t.equal(stream.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR, 'reset with PROTOCOL_ERROR')
  t.equal(reached, 0, 'no route, no hook ran')
})

t.test('frames the client sends right behind its CONNECT, before the 200, are not lost', async (t) => {
  const s = await h2Server(t, 'h2c')
  const { session: h2 } = await session(t, s)
  const stream = h2.request(wsConnectHeaders(s.authority, '/echo', 'http'), { endStream: false })
  stream.on('error', () => {})
  stream.write(Buffer.concat([frame(0x1, 'early one'), frame(0x1, 'early two')]))
  const ws = new H2Ws(await within(new Promise<{ stream: http2.ClientHttp2Stream, status: number, headers: http2.IncomingHttpHeaders }>((resolve) => {
    stream.once('response', (headers) => resolve({ stream, status: Number(headers[':status']), headers }))
  }), 3000, 'response'))
  t.equal(ws.status, 200)
  t.equal((await ws.nextMessage()).payload.toString(), 'early one')
  t.equal((await ws.nextMessage()).payload.toString(), 'early two')
})

t.test('typed messages (route message schemas) on a stream: validated in, serialized out, 1007 on invalid JSON', async (t) => {
  const Say = {
    type: 'object', properties: { type: { const: 'say' }, text: { type: 'string' } }, required: ['type', 'text'], additionalProperties: false
  } as const
  const Said = { type: 'object', properties: { type: { type: 'string' }, text: { type: 'string' } }, required: ['type'] } as const
  const s = await h2Server(t, 'h2c', {}, (app) => {
    app.get('/typed', { websocket: { messages: { receive: Say, send: Said } } }, (socket) => {
      socket.on('error', () => {})
      socket.on('message', (message) => { socket.sendMessage({ type: 'said', text: (message as { text: string }).text, secret: 'left out' }) })
    })
  })
  const { session: h2 } = await session(t, s)
  const ws = await openH2Ws(h2, s.authority, '/typed', 'http')
  ws.send(JSON.stringify({ type: 'say', text: 'hi' }))
  t.same(JSON.parse((await ws.nextMessage()).payload.toString()), { type: 'said', text: 'hi' }, 'serialized by the route schema')
  ws.send('{ not json')
  await ws.waitClosed()
  t.equal(ws.closeCode, 1007)
})

t.test('a socket that stops reading (messages held past inboundHighWaterMark) pauses only its own stream', async (t) => {
  let held: WebSocket | null = null
  const s = await h2Server(t, 'h2c', {}, (app) => {
    // No 'message' listener: messages are held, and reading pauses past the mark.
    app.get('/hold', { websocket: { inboundHighWaterMark: 64 * 1024 } }, (socket) => { held = socket })
  })
  const { session: h2 } = await session(t, s)
  const stalled = await openH2Ws(h2, s.authority, '/hold', 'http')
  const chunk = frame(0x2, Buffer.alloc(16 * 1024, 3))
  for (let i = 0; i < 128; i++) stalled.stream.write(chunk) // 2 MiB
  await waitFor(() => held !== null, 3000, 'held socket')
  // The server stops taking the stalled stream's data: the client is left holding most of it.
  await waitFor(() => stalled.stream.writableLength > 1024 * 1024, 3000, 'client-side backlog')
  t.ok(stalled.stream.writableLength > 1024 * 1024, `client still holds ${stalled.stream.writableLength} bytes: the stream window is closed`)
  const sibling = await openH2Ws(h2, s.authority, '/echo', 'http')
  let echoed = 0
  for (let i = 0; i < 100; i++) {
    sibling.send(Buffer.alloc(8 * 1024, i))
    if ((await sibling.nextMessage()).payload.length === 8 * 1024) echoed++
  }
  t.equal(echoed, 100, 'the sibling echoes 800 KiB meanwhile, in both directions')
  // Consuming the held messages reopens the window: everything arrives.
  let received = 0
  held!.on('message', () => { received++ })
  await waitFor(() => received === 128, 5000, 'all 128 held and pending messages')
  t.equal(received, 128)
})

t.test('a plain HTTP/2 GET to a WebSocket-only route is answered, without HTTP/1.1 connection headers', async (t) => {
  const s = await h2Server(t, 'tls')
  const { session: h2 } = await session(t, s)
  for (const method of ['GET', 'HEAD']) {
    const res = await connectRequest(h2, { ':method': method, ':path': '/echo' })
    t.equal(res.status, 405, `${method}: 405 (over HTTP/2 a WebSocket is an extended CONNECT)`)
    t.equal(res.headers.allow, 'CONNECT', `${method}: Allow: CONNECT`)
    t.equal(res.headers.upgrade, undefined, `${method}: no Upgrade field (forbidden in HTTP/2)`)
    res.stream.close()
  }
  // The same route over HTTP/1.1 on the same server still answers 426 with Upgrade: websocket.
  const https = await import('node:https')
  const status = await within(new Promise<[number | undefined, string | undefined]>((resolve, reject) => {
    https.get({ host: '127.0.0.1', port: s.port, path: '/echo', rejectUnauthorized: false }, (res) => {
      res.resume()
      resolve([res.statusCode, res.headers.upgrade])
    }).on('error', reject)
  }), 3000, 'HTTP/1.1 GET')
  t.same(status, [426, 'websocket'])
  await echoOnce(t, await openH2Ws(h2, s.authority, '/echo', s.scheme), 'the session is unharmed')
})

t.test('HTTP/1.1 interop on the HTTP/2 server (allowHTTP1): ws with permessage-deflate, pings and a server close', async (t) => {
  const s = await h2Server(t, 'tls', { perMessageDeflate: { threshold: 0 } }, (app) => {
    app.get('/bye', { websocket: true }, (socket) => {
      socket.on('message', (data) => { socket.close(4002, `bye ${data.toString()}`) })
    })
  })
  const client = new WebSocketClient(`wss://127.0.0.1:${s.port}/echo`, { rejectUnauthorized: false, perMessageDeflate: true })
  t.teardown(() => client.terminate())
  await within(new Promise((resolve, reject) => { client.once('open', resolve); client.once('error', reject) }), 5000, 'wss open')
  t.match(client.extensions, /permessage-deflate/, 'deflate negotiated over HTTP/1.1')
  const big = 'compressible '.repeat(1000)
  client.send(big)
  const [echo] = await within(new Promise<[Buffer]>((resolve) => client.once('message', (d: Buffer) => resolve([d]))), 3000, 'echo')
  t.equal(echo.toString(), big)
  const pong = within(new Promise<string>((resolve) => client.once('pong', (d: Buffer) => resolve(d.toString()))), 3000, 'pong')
  client.ping('are you there')
  t.equal(await pong, 'are you there')
  const bye = new WebSocketClient(`wss://127.0.0.1:${s.port}/bye`, { rejectUnauthorized: false })
  t.teardown(() => bye.terminate())
  await within(new Promise((resolve, reject) => { bye.once('open', resolve); bye.once('error', reject) }), 5000, 'wss open')
  const closed = within(new Promise<[number, string]>((resolve) => bye.once('close', (code: number, reason: Buffer) => resolve([code, reason.toString()]))), 3000, 'close')
  bye.send('now')
  t.same(await closed, [4002, 'bye now'])
  t.ok(s.sockets.every((x) => x.httpVersion === '1.1'), 'all over HTTP/1.1')
})

t.test("the advertisement keeps the server's own settings: maxConcurrentStreams bounds WebSockets per connection", async (t) => {
  const { app } = await buildApp({}, { http2: true, http: { settings: { maxConcurrentStreams: 2 } } } as unknown as FastifyServerOptions)
  app.get('/echo', { websocket: true }, (socket) => { socket.on('message', (d, b) => socket.send(d, { binary: b })) })
  const port = await listen(app)
  t.teardown(() => within(app.close(), 10_000, 'app.close()'))
  const { session: h2, settings } = await connectH2(`http://127.0.0.1:${port}`)
  t.teardown(() => { h2.destroy() })
  t.equal(settings.maxConcurrentStreams, 2, 'the app\'s setting')
  t.equal(settings.enableConnectProtocol, true, 'and RFC 8441')
  const authority = `127.0.0.1:${port}`
  const a = await openH2Ws(h2, authority, '/echo', 'http')
  const b = await openH2Ws(h2, authority, '/echo', 'http')
  // A third stream waits in the client until a slot frees (Node's client honours the peer's limit).
  let opened = false
  const third = openH2Ws(h2, authority, '/echo', 'http').then((ws) => { opened = true; return ws })
  await echoOnce(t, b, 'a round trip after the third CONNECT was queued')
  await echoOnce(t, a, 'and another')
  t.equal(opened, false, 'the third is not open while two are')
  a.close(1000, '', false)
  await a.waitClosed()
  await echoOnce(t, await third, 'the third WebSocket once the first closed')
})
