// Subprotocol negotiation (RFC 6455 §4.2.2): the server's preference wins among what the client offered,
// an unoffered protocol is never echoed, and the header is parsed strictly and in linear time.
import t from 'tap'
import { connect } from 'node:net'
import { parseProtocols, pickProtocol } from '../../lib/http/subprotocol.js'
import type { HandshakeRejectedError } from '../../lib/index.js'
import { buildApp, listen, handshake, rawHttp, openWs, within } from '../helpers/index.js'

t.test('parseProtocols', async (t) => {
  t.same(parseProtocols(undefined), [])
  t.same(parseProtocols(''), [], 'an empty header offers nothing')
  t.same(parseProtocols('chat'), ['chat'])
  t.same(parseProtocols('chat, superchat'), ['chat', 'superchat'])
  t.same(parseProtocols('  chat ,superchat\t,v2.json  '), ['chat', 'superchat', 'v2.json'], 'optional whitespace')
  t.same(parseProtocols(['chat', 'superchat, v2']), ['chat', 'superchat', 'v2'], 'repeated headers as an array')
  t.same(parseProtocols('chat,,superchat'), ['chat', 'superchat'], 'empty list elements are ignored (RFC 7230 §7)')
  t.same(parseProtocols(', chat ,'), ['chat'])
  t.equal(parseProtocols(',,, ,'), null, 'only empty elements: 1#token needs one')
  t.equal(parseProtocols('chat, chat'), null, 'duplicates are a client error (RFC 6455 §4.1)')
  t.equal(parseProtocols('chat room'), null, 'a space inside a token')
  t.equal(parseProtocols('chat;v=1'), null)
  t.equal(parseProtocols('"chat"'), null, 'quoted strings are not tokens')
  t.equal(parseProtocols('chät'), null, 'non-ASCII')
  t.equal(parseProtocols('a/b'), null, 'separator')
  t.same(parseProtocols(Array.from({ length: 64 }, (_, i) => `p${i}`).join(',')), Array.from({ length: 64 }, (_, i) => `p${i}`))
  t.equal(parseProtocols(Array.from({ length: 65 }, (_, i) => `p${i}`).join(',')), null, 'more than 64 offers')
  t.equal(parseProtocols('a'.repeat(5000)), null, 'over 4 KiB')
  t.equal(parseProtocols(','.repeat(64 * 1024)), null, '64 KiB of commas')
})

t.test('pickProtocol', async (t) => {
  t.equal(pickProtocol(['b', 'a'], ['a', 'b']), 'b', 'server order wins')
  t.equal(pickProtocol(['a', 'b'], ['b', 'a']), 'a')
  t.equal(pickProtocol(['x'], ['a', 'b']), '')
  t.equal(pickProtocol([], ['a']), '')
})

t.test('over TCP', async (t) => {
  const { app } = await buildApp()
  const echoProtocol = (socket: { protocol: string, send (d: string): boolean }) => { socket.send(`protocol=${socket.protocol}`) }
  app.get('/chat', { websocket: { protocols: ['superchat', 'chat'] } }, echoProtocol)
  app.get('/optional', { websocket: { protocols: ['chat'], protocolRequired: false } }, echoProtocol)
  app.get('/none', { websocket: true }, echoProtocol)
  const selected: Array<{ offered: readonly string[], url: string }> = []
  app.get('/select', {
    websocket: {
      selectProtocol: (offered, request) => {
        selected.push({ offered, url: request.url })
        return offered.find((p) => p.startsWith('v2.')) ?? ''
      }
    }
  }, echoProtocol)
  app.get('/select-liar', { websocket: { selectProtocol: () => 'never-offered', protocolRequired: false } }, echoProtocol)
  app.get('/select-liar-required', { websocket: { selectProtocol: () => 'never-offered' } }, echoProtocol)
  const port = await listen(app)
  t.teardown(() => app.close())

  t.test("the server's first protocol that the client offered wins", async (t) => {
    const a = await openWs(t, port, '/chat', { 'Sec-WebSocket-Protocol': 'chat, superchat' })
    t.equal(a.responseHeaders['sec-websocket-protocol'], 'superchat')
    t.equal((await a.nextFrame()).payload.toString(), 'protocol=superchat', 'socket.protocol')
    const b = await openWs(t, port, '/chat', { 'Sec-WebSocket-Protocol': 'other, chat' })
    t.equal(b.responseHeaders['sec-websocket-protocol'], 'chat')
  })

  t.test('repeated headers, commas and spaces', async (t) => {
    const a = await openWs(t, port, '/chat', { 'Sec-WebSocket-Protocol': ['other', 'chat'] })
    t.equal(a.responseHeaders['sec-websocket-protocol'], 'chat', 'offer spread over two headers')
    const b = await openWs(t, port, '/chat', { 'Sec-WebSocket-Protocol': ' ,other ,, superchat , ' })
    t.equal(b.responseHeaders['sec-websocket-protocol'], 'superchat')
  })

  t.test('no offer: 101 without a protocol', async (t) => {
    const a = await openWs(t, port, '/chat')
    t.equal(a.responseHeaders['sec-websocket-protocol'], undefined)
    t.equal((await a.nextFrame()).payload.toString(), 'protocol=')
  })

  t.test('nothing acceptable: 400, unless protocolRequired: false', async (t) => {
    const r = await rawHttp(port, handshake('/chat', port, { 'Sec-WebSocket-Protocol': 'mqtt, stomp' }))
    t.equal(r.statusLine, 'HTTP/1.1 400 Bad Request')
    t.match(JSON.parse(r.body), { message: /superchat, chat/ }, 'the reason lists what the route speaks')
    t.equal(r.headers['sec-websocket-protocol'], undefined)
    const none = await rawHttp(port, handshake('/none', port, { 'Sec-WebSocket-Protocol': 'mqtt' }))
    t.equal(none.status, 400, 'a route with no protocols refuses an offer by default')
    const a = await openWs(t, port, '/optional', { 'Sec-WebSocket-Protocol': 'mqtt' })
    t.equal(a.responseHeaders['sec-websocket-protocol'], undefined, 'accepted without a protocol, none echoed')
    t.equal((await a.nextFrame()).payload.toString(), 'protocol=')
  })

  t.test('selectProtocol decides, and can never echo an unoffered protocol', async (t) => {
    const a = await openWs(t, port, '/select?q=1', { 'Sec-WebSocket-Protocol': 'v1.json, v2.json, v2.cbor' })
    t.equal(a.responseHeaders['sec-websocket-protocol'], 'v2.json')
    t.same(selected, [{ offered: ['v1.json', 'v2.json', 'v2.cbor'], url: '/select?q=1' }])
    const r = await rawHttp(port, handshake('/select', port, { 'Sec-WebSocket-Protocol': 'v1.json' }))
    t.equal(r.status, 400, "selectProtocol returned '': refused while protocolRequired")
    const b = await openWs(t, port, '/select-liar', { 'Sec-WebSocket-Protocol': 'chat' })
    t.equal(b.responseHeaders['sec-websocket-protocol'], undefined, 'an unoffered choice is dropped')
    t.equal((await b.nextFrame()).payload.toString(), 'protocol=')
    const c = await rawHttp(port, handshake('/select-liar-required', port, { 'Sec-WebSocket-Protocol': 'chat' }))
    t.equal(c.status, 400)
  })

  t.test('invalid offers: 400', async (t) => {
    for (const value of ['chat room', 'chat, chat', '"chat"', 'chat;q=1', ',', 'a/b']) {
      const r = await rawHttp(port, handshake('/optional', port, { 'Sec-WebSocket-Protocol': value }))
      t.equal(r.status, 400, JSON.stringify(value))
      t.match(JSON.parse(r.body), { message: /Sec-WebSocket-Protocol/ })
    }
  })

  t.test('hostile headers are answered, never hang', async (t) => {
    // 64 KiB of commas is over Node's header limit: answered by Node's parser (431) before any routing.
    const huge = await rawHttp(port, handshake('/chat', port, { 'Sec-WebSocket-Protocol': ','.repeat(64 * 1024) }), { ms: 5000 })
    t.ok(huge.status >= 400 && huge.status < 500, `answered with ${huge.status}`)
    // Just under Node's limit, our parser sees it: refused.
    for (const value of [','.repeat(12 * 1024), 'a,'.repeat(6 * 1024), 'chat,' + ' '.repeat(12 * 1024) + 'x']) {
      const r = await rawHttp(port, handshake('/chat', port, { 'Sec-WebSocket-Protocol': value }), { ms: 5000 })
      t.equal(r.status, 400)
    }
    // Leading whitespace of a header value is not part of it (Node strips it).
    const padded = await openWs(t, port, '/chat', { 'Sec-WebSocket-Protocol': ' '.repeat(12 * 1024) + 'chat' })
    t.equal(padded.responseHeaders['sec-websocket-protocol'], 'chat')
  })

  t.test('a slow client sending a big header is still answered', async (t) => {
    const socket = connect({ host: '127.0.0.1', port })
    t.teardown(() => socket.destroy())
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    const request = handshake('/chat', port, { 'Sec-WebSocket-Protocol': ', '.repeat(3000) + 'chat' })
    for (let i = 0; i < request.length; i += 1024) socket.write(request.slice(i, i + 1024))
    await within(ended, 5000, 'answer and close')
    t.match(Buffer.concat(chunks).toString(), /^HTTP\/1\.1 400 /)
  })
})

t.test('injectWS offers protocols', async (t) => {
  const { app } = await buildApp({ protocols: ['b', 'a'] })
  app.get('/', { websocket: true }, () => {})
  await app.ready()
  t.teardown(() => app.close())
  const ws = await app.injectWS('/', { protocols: ['a', 'b'] })
  t.teardown(() => ws.terminate())
  t.equal(ws.protocol, 'b', 'plugin-level protocols, server preference')
  const err = await app.injectWS('/', { protocols: ['c'] }).then(() => null, (e: unknown) => e as HandshakeRejectedError)
  t.equal(err?.statusCode, 400)
})
