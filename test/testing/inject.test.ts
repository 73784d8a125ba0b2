/**
 * app.injectWS(): what a test written the natural way sees (listeners attached right after the await, or
 * later), refused handshakes, permessage-deflate, and the client half of the handshake on its own.
 */
import t from 'tap'
import { once } from 'node:events'
import { buildApp, delay, within } from '../helpers/index.js'
import type { WebSocket } from '../../lib/socket/websocket.js'
import type { HandshakeRejectedError } from '../../lib/testing/inject.js'
import { buildRequestHeaders, checkResponse, parseResponseHead } from '../../lib/testing/client-handshake.js'
import { acceptKey } from '../../lib/http/handshake.js'

interface Seen { messages: string[], close: Promise<[number, string]> }

/** Attach listeners the natural way: a message collector and a close promise. */
function watch (ws: WebSocket): Seen {
  const messages: string[] = []
  ws.on('message', (data) => messages.push(data.toString()))
  const close = within(new Promise<[number, string]>((resolve) => {
    ws.on('close', (code, reason) => resolve([code, reason]))
  }), 2000, 'the close event on the client socket')
  return { messages, close }
}

t.test('a handler that sends and closes synchronously: the test sees the message and the 4000', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  app.get('/x', { websocket: true }, (socket) => {
    socket.send('hello')
    socket.close(4000, 'bye')
  })
  const ws = await app.injectWS('/x')
  const seen = watch(ws)
  t.same(await seen.close, [4000, 'bye'])
  t.same(seen.messages, ['hello'], 'the message arrived before the close')
})

t.test('a handler that throws: the test sees the 1011', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  app.get('/x', { websocket: true }, (socket) => {
    socket.send('about to fail')
    throw new Error('handler bug')
  })
  const ws = await app.injectWS('/x')
  const seen = watch(ws)
  const [code] = await seen.close
  t.equal(code, 1011)
  t.same(seen.messages, ['about to fail'])
})

t.test('an async handler that sends before its first await, then after it, then closes', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  app.get('/x', { websocket: true }, async (socket) => {
    socket.send('before the await')
    await delay(5)
    socket.send('after the await')
    socket.close(4001)
  })
  const ws = await app.injectWS('/x')
  const seen = watch(ws)
  t.same(await seen.close, [4001, ''])
  t.same(seen.messages, ['before the await', 'after the await'])
})

t.test('an async handler that rejects before its first await: 1011', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  app.get('/x', { websocket: true }, async (socket) => {
    socket.send('early')
    throw new Error('async handler bug')
  })
  const ws = await app.injectWS('/x')
  const seen = watch(ws)
  t.equal((await seen.close)[0], 1011)
  t.same(seen.messages, ['early'])
})

t.test('listeners attached after awaiting something else still see the message and the close', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  app.get('/x', { websocket: true }, (socket) => {
    socket.send('hello')
    socket.close(4000, 'bye')
  })
  app.get('/http', async () => ({ ok: true }))
  const ws = await app.injectWS('/x')
  const res = await app.inject('/http') // real I/O turns before the listeners exist
  t.equal(res.statusCode, 200)
  await delay(20)
  t.equal(ws.readyState, ws.CLOSED, 'the connection itself did close meanwhile')
  const seen = watch(ws)
  t.same(await seen.close, [4000, 'bye'])
  t.same(seen.messages, ['hello'])
  // A second close listener, added after the first was told, is told too (once); events.once works as well.
  const [code] = await within(once(ws, 'close') as Promise<[number, string]>, 2000, 'events.once on a closed socket')
  t.equal(code, 4000)
})

t.test('a close listener is called once, even when attached before and after the close', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  app.get('/x', { websocket: true }, (socket) => { socket.on('message', () => socket.close(4002)) })
  const ws = await app.injectWS('/x')
  const calls: number[] = []
  ws.on('close', (code) => calls.push(code))
  ws.send('close please')
  await within(once(ws, 'close'), 2000, 'close')
  await delay(10)
  t.same(calls, [4002])
  const removed = (): void => { calls.push(-1) }
  ws.on('close', removed)
  ws.removeListener('close', removed) // removed before it was told: not called
  await delay(10)
  t.same(calls, [4002])
})

t.test('a handler that pings at once: the ping event is not lost either', async (t) => {
  const { app } = await buildApp()
  t.teardown(() => app.close())
  app.get('/x', { websocket: true }, (socket) => { socket.ping('p') })
  const ws = await app.injectWS('/x')
  const [data] = await within(once(ws, 'ping') as Promise<[Buffer]>, 2000, 'ping')
  t.equal(data.toString(), 'p')
  ws.close()
})

t.test('a refused handshake rejects with its status, headers and body', async (t) => {
  const { app } = await buildApp({ origins: ['https://good.example'] })
  t.teardown(() => app.close())
  app.get('/x', {
    websocket: true,
    onRequest: async (request, reply) => {
      if (request.headers.authorization === undefined) return reply.code(401).send({ message: 'log in first' })
    }
  }, (socket) => { socket.close() })

  const unauthorised = await app.injectWS('/x').then(() => null, (err: HandshakeRejectedError) => err)
  t.ok(unauthorised !== null)
  t.equal(unauthorised?.code, 'FST_WS_HANDSHAKE_REJECTED')
  t.equal(unauthorised?.statusCode, 401)
  t.match(unauthorised?.body, /log in first/)
  t.match(unauthorised?.message, /401: log in first/)

  const forbidden = await app.injectWS('/x', { headers: { authorization: 'x' }, origin: 'https://evil.example' })
    .then(() => null, (err: HandshakeRejectedError) => err)
  t.equal(forbidden?.statusCode, 403)
  t.match(forbidden?.headers['content-type'], /json/)

  const missing = await app.injectWS('/nowhere').then(() => null, (err: HandshakeRejectedError) => err)
  t.equal(missing?.statusCode, 404)

  const ok = await app.injectWS('/x', { headers: { authorization: 'x' }, origin: 'https://good.example' })
  t.same(await watch(ok).close, [1005, ''])
})

t.test('permessage-deflate: negotiated, and compressed messages both ways, with early events kept', async (t) => {
  const { app } = await buildApp({ perMessageDeflate: { threshold: 0 } })
  t.teardown(() => app.close())
  const big = 'compress me '.repeat(500)
  app.get('/x', { websocket: true }, (socket) => {
    socket.send(big) // compressed, so it reaches the client through zlib, after the 101
    socket.on('message', (data) => {
      socket.send(`echo ${data.length}`)
      socket.close(4003)
    })
  })
  const ws = await app.injectWS('/x', { perMessageDeflate: true })
  t.match(ws.extensions, /^permessage-deflate/)
  const seen = watch(ws)
  ws.send('x'.repeat(10_000))
  t.same(await seen.close, [4003, ''])
  t.same(seen.messages, [big, 'echo 10000'])

  const plain = await app.injectWS('/x') // not offered: not negotiated
  t.equal(plain.extensions, '')
  plain.terminate()
})

t.test('app.close() with an injected client that never attached a listener does not wait for closeTimeout', async (t) => {
  const { app } = await buildApp({ closeTimeout: 4000 })
  app.get('/x', { websocket: true }, () => {})
  const ws = await app.injectWS('/x')
  const start = Date.now()
  await within(app.close(), 3000, 'app.close()')
  t.ok(Date.now() - start < 3000, 'the client answered the closing handshake')
  t.equal(ws.readyState, ws.CLOSED)
})

t.test('client handshake: request headers, and the checks on the response', async (t) => {
  const key = 'dGhlIHNhbXBsZSBub25jZQ=='
  const headers = buildRequestHeaders(key, {
    port: 8080,
    protocols: ['a', 'b'],
    origin: 'https://o.example',
    deflate: null,
    headers: { 'X-Extra': ['1', '2'], Host: 'override', skipped: undefined }
  })
  t.same(headers, {
    host: 'override',
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': key,
    'sec-websocket-protocol': 'a, b',
    origin: 'https://o.example',
    'x-extra': '1, 2'
  })
  t.equal(buildRequestHeaders(key, { port: 80, deflate: null }).host, 'localhost')

  const head = (lines: string[]): Buffer => Buffer.from(lines.join('\r\n') + '\r\n\r\nrest')
  const ok = ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Accept: ' + acceptKey(key)]
  const none = { deflate: null }
  t.equal(parseResponseHead(Buffer.from('HTTP/1.1 101 Switching')), null, 'incomplete head')
  const parsed = parseResponseHead(head(ok))
  t.equal(parsed?.status, 101)
  t.equal(parsed?.headers.upgrade, 'websocket')
  t.equal(parsed?.rest.toString(), 'rest')
  t.same(checkResponse(parsed!, key, none), { protocol: '', extensions: '', params: null })
  t.equal(parseResponseHead(head(['HTTP/1.0 101 Switching Protocols']))?.status, 0, 'not an HTTP/1.1 status line')

  const check = (lines: string[], offer: Parameters<typeof checkResponse>[2] = none): unknown =>
    checkResponse(parseResponseHead(head(lines))!, key, offer)
  t.throws(() => check(ok.slice(1).concat('HTTP/1.1 200 OK')), /Expected a 101/)
  t.throws(() => check([ok[0]!, ok[2]!, ok[3]!]), /Upgrade: websocket/)
  t.throws(() => check([ok[0]!, ok[1]!, ok[3]!]), /Connection: Upgrade/)
  t.throws(() => check([...ok.slice(0, 3), 'Sec-WebSocket-Accept: nope']), /Sec-WebSocket-Accept/)
  t.throws(() => check([...ok, 'Sec-WebSocket-Protocol: chat']), /subprotocol that was not offered: chat/)
  t.equal((check([...ok, 'Sec-WebSocket-Protocol: chat'], { protocols: ['chat'], deflate: null }) as { protocol: string }).protocol, 'chat')
  t.throws(() => check([...ok, 'Sec-WebSocket-Extensions: permessage-deflate']), /not offered/)
})
