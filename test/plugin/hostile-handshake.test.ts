// Hostile handshakes: oversized and overlong Sec-WebSocket-Protocol / Sec-WebSocket-Extensions headers,
// thousands of headers, and a handshake trickled one byte at a time. Each is answered (or dropped) within a
// bounded time and the server keeps serving.
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { parseProtocols } from '../../lib/http/subprotocol.js'
import { parseExtensions } from '../../lib/http/extension-header.js'
import { buildApp, listen, rawHttp, handshake, RawWs, within, delay, guardUnhandled, type RawResponse } from '../helpers/index.js'

/** A refusal may come with a reset while the request is still being written: read what arrived. */
const REFUSED = { ms: 2000, tolerateReset: true }

const KiB = 1024

/** A server that accepts headers of up to 256 KiB, so the plugin's own caps are what refuses. */
async function bigHeaderServer (t: Test, pluginOptions = {}): Promise<number> {
  const { app } = await buildApp({ protocols: ['chat'], ...pluginOptions }, { http: { maxHeaderSize: 256 * KiB } })
  app.get('/ws', { websocket: true }, (socket) => { socket.send('hello') })
  t.teardown(() => app.close())
  return listen(app)
}

async function stillServing (t: Test, port: number): Promise<void> {
  const ws = await RawWs.connect(port, '/ws', { headers: { 'Sec-WebSocket-Protocol': 'chat' } })
  t.equal(ws.status, 101, 'the server still accepts a normal handshake')
  ws.destroy()
}

function assertRefused (t: Test, res: RawResponse, status: number, reason: RegExp, name: string): void {
  t.equal(res.status, status, `${name}: answered ${status}`)
  t.match(res.body, reason, `${name}: the reason names the header`)
}


t.test('a 64 KiB Sec-WebSocket-Protocol is refused with 400 within a 2 s hang guard', async (t) => {
  const port = await bigHeaderServer(t)
  const guard = guardUnhandled()
  t.teardown(guard.stop)
  const shapes: Array<[string, string]> = [
    ['one 64 KiB token', 'a'.repeat(64 * KiB)],
    ['thousands of entries', Array.from({ length: 8000 }, (_, i) => `p${i}`).join(', ')],
    ['thousands of empty entries', ','.repeat(64 * KiB)],
    // (leading and trailing whitespace is not part of a header value: Node strips it before we see it)
    ['64 KiB of whitespace between two tokens', 'chat' + ' \t'.repeat(32 * KiB) + ', chat2'],
    ['a valid offer followed by 64 KiB of junk', 'chat, ' + 'x,'.repeat(32 * KiB)]
  ]
  for (const [name, value] of shapes) {
    const res = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Protocol': value }), REFUSED)
    assertRefused(t, res, 400, /Sec-WebSocket-Protocol/, name)
  }
  await stillServing(t, port)
  t.same(guard.errors, [], 'no unhandled errors')
})

t.test('thousands of Sec-WebSocket-Protocol header lines (joined by Node) are refused with 400', async (t) => {
  const port = await bigHeaderServer(t)
  const lines = Array.from({ length: 1500 }, (_, i) => `p${i}`)
  const res = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Protocol': lines }), REFUSED)
  assertRefused(t, res, 400, /Sec-WebSocket-Protocol/, '1500 header lines')
  await stillServing(t, port)
})

t.test('a 64 KiB or thousand-entry Sec-WebSocket-Extensions is refused with 400 within a 2 s hang guard', async (t) => {
  const port = await bigHeaderServer(t, { perMessageDeflate: true })
  const shapes: Array<[string, string | string[]]> = [
    ['one 64 KiB token', 'x'.repeat(64 * KiB)],
    ['thousands of offers', Array.from({ length: 4000 }, () => 'permessage-deflate').join(', ')],
    ['thousands of parameters', 'permessage-deflate' + '; client_max_window_bits'.repeat(2500)],
    ['an unterminated 64 KiB quoted string', 'permessage-deflate; server_max_window_bits="' + '\\a'.repeat(32 * KiB)],
    ['thousands of header lines', Array.from({ length: 1500 }, () => 'permessage-deflate')],
    ['64 KiB of separators', ';,'.repeat(32 * KiB)]
  ]
  for (const [name, value] of shapes) {
    const res = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Protocol': 'chat', 'Sec-WebSocket-Extensions': value }), REFUSED)
    assertRefused(t, res, 400, /Sec-WebSocket-Extensions/, name)
  }
  await stillServing(t, port)
})

t.test('the header parsers stay linear on pathological input (bounded by a hang guard, not a speed assert)', async (t) => {
  // Each input is parsed 200 times; a quadratic or backtracking parser would take minutes, this takes milliseconds.
  const inputs = [
    'a'.repeat(4096),
    'a '.repeat(2048),
    'a,'.repeat(2048),
    ' \t'.repeat(2048) + 'a',
    'permessage-deflate;' + ' '.repeat(8000),
    'x; a="' + '\\"'.repeat(4000) + '"',
    'x' + '; a=b'.repeat(1600),
    'x,'.repeat(4000)
  ]
  await within((async () => {
    for (let round = 0; round < 200; round++) {
      for (const input of inputs) {
        parseProtocols(input)
        parseExtensions(input)
        parseExtensions([input, input])
      }
      if (round % 20 === 0) await delay(0)
    }
  })(), 5000, 'parsing pathological headers')
  t.equal(parseProtocols('a'.repeat(64 * KiB)), null, '64 KiB protocol header refused')
  t.equal(parseExtensions('x'.repeat(64 * KiB)), null, '64 KiB extensions header refused')
  t.equal(parseExtensions(Array.from({ length: 5000 }, () => 'permessage-deflate')), null, 'thousands of lines refused')
})

t.test('a request over Node\'s maxHeaderSize (16 KiB default) gets 431 and the server keeps serving', async (t) => {
  const { app } = await buildApp({ protocols: ['chat'] })
  app.get('/ws', { websocket: true }, (socket) => { socket.send('hello') })
  t.teardown(() => app.close())
  const port = await listen(app)
  const guard = guardUnhandled()
  t.teardown(guard.stop)

  const many: Record<string, string> = {}
  for (let i = 0; i < 5000; i++) many[`X-Junk-${i}`] = 'v'
  const manyHeaders = await rawHttp(port, handshake('/ws', port, many), REFUSED)
  t.equal(manyHeaders.status, 431, '5000 headers (about 60 KiB): 431 Request Header Fields Too Large')

  const big = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Protocol': 'a'.repeat(64 * KiB) }), REFUSED)
  t.equal(big.status, 431, 'a 64 KiB header: 431 from Node before the plugin sees it')

  await stillServing(t, port)
  t.same(guard.errors, [], 'no unhandled errors')
})

t.test('thousands of small headers under maxHeaderSize: Node keeps the first 2000 (maxHeadersCount); the request is judged on those', async (t) => {
  const { app } = await buildApp({ protocols: ['chat'] })
  app.get('/ws', { websocket: true }, (socket) => { socket.send('hello') })
  t.teardown(() => app.close())
  const port = await listen(app)

  // 3000 one-letter headers (about 15 KiB) before the key: Node drops everything past the 2000th header,
  // including the key, so the handshake is refused with 400 (never accepted on partial headers).
  const junk = 'a: b\r\n'.repeat(3000)
  const request = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Version: 13\r\n${junk}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat\r\n\r\n`
  const res = await rawHttp(port, request, REFUSED)
  t.equal(res.status, 400, '400: the key was past maxHeadersCount')
  t.match(res.body, /Sec-WebSocket-Key/)

  // 3000 copies of Sec-WebSocket-Key: the first 2000 are joined into one invalid value.
  const keys = Array.from({ length: 3000 }, () => 'dGhlIHNhbXBsZSBub25jZQ==')
  const res2 = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Key': keys }).replace('Sec-WebSocket-Key', 'sec-websocket-key'), REFUSED)
  t.equal(res2.status, 431, '3000 key lines (about 100 KiB) exceed maxHeaderSize: 431')
  const fewKeys = Array.from({ length: 100 }, () => 'dGhlIHNhbXBsZSBub25jZQ==')
  const res3 = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Key': fewKeys, 'Sec-WebSocket-Protocol': 'chat' }), REFUSED)
  t.equal(res3.status, 400, '100 key lines: refused, a key must occur exactly once')
  await stillServing(t, port)
})

t.test('a handshake sent one byte at a time is dropped by Node\'s headersTimeout', async (t) => {
  // Fastify 5 passes its `http` option to http.createServer: headersTimeout and the interval at which Node checks
  // it (connectionsCheckingInterval, 30 s by default) are set there. Fastify sets server.requestTimeout from its own
  // `requestTimeout` option (default 0, i.e. none), so that one is passed at the top level.
  const { app } = await buildApp({ protocols: ['chat'] }, {
    http: { headersTimeout: 500, connectionsCheckingInterval: 100 },
    requestTimeout: 1000
  })
  let handled = 0
  app.get('/ws', { websocket: true }, (socket) => {
    handled++
    socket.send('hello')
  })
  t.teardown(() => app.close())
  const port = await listen(app)
  t.equal(app.server.headersTimeout, 500)

  const request = Buffer.from(handshake('/ws', port, { 'Sec-WebSocket-Protocol': 'chat' }))
  const started = Date.now()
  const outcome = await within(new Promise<{ sent: number, received: string, elapsed: number }>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    let sent = 0
    let received = ''
    const timer = setInterval(() => {
      if (sent < request.length && !socket.destroyed) socket.write(request.subarray(sent, ++sent))
    }, 40)
    socket.on('data', (c: Buffer) => { received += c.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => {
      clearInterval(timer)
      resolve({ sent, received, elapsed: Date.now() - started })
    })
  }), 4000, 'the server dropping a trickled handshake')
  t.ok(outcome.sent < request.length, `dropped after ${outcome.sent} of ${request.length} bytes, ${outcome.elapsed} ms`)
  t.ok(outcome.received === '' || /^HTTP\/1\.1 408/.test(outcome.received),
    `the client gets ${outcome.received === '' ? 'a closed socket' : outcome.received.split('\r\n')[0]}`)
  t.equal(handled, 0, 'the handler never ran')
  await stillServing(t, port)
})

t.test('Node\'s default headersTimeout is 60 s (README: Security, slow handshakes)', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  await app.ready()
  t.equal(app.server.headersTimeout, 60_000)
})
