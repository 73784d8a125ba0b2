// The opening handshake (RFC 6455 §4.2): unit tests of the validator and the accept key,
// then raw TCP requests, asserting the exact status line and headers the server writes.
import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { checkHandshake, acceptKey, hasToken, switchingProtocols, type Rejection } from '../../lib/http/handshake.js'
import { buildApp, listen, handshake, rawHttp, RawWs, within, frame, newKey } from '../helpers/index.js'

function fakeRequest (fields: { method?: string, major?: number, minor?: number, headers?: Record<string, string | undefined> }): IncomingMessage {
  const headers: Record<string, string | undefined> = {
    host: 'example.com',
    upgrade: 'websocket',
    connection: 'Upgrade',
    'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
    'sec-websocket-version': '13',
    ...fields.headers
  }
  for (const k of Object.keys(headers)) if (headers[k] === undefined) delete headers[k]
  return {
    method: fields.method ?? 'GET',
    httpVersionMajor: fields.major ?? 1,
    httpVersionMinor: fields.minor ?? 1,
    headers
  } as unknown as IncomingMessage
}

function rejection (value: string | Rejection): Rejection {
  if (typeof value === 'string') throw new Error(`expected a rejection, got the key ${value}`)
  return value
}

t.test('acceptKey: the RFC 6455 §1.3 example', async (t) => {
  t.equal(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=')
  t.not(acceptKey('AAAAAAAAAAAAAAAAAAAAAA=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', 'depends on the key')
})

t.test('switchingProtocols writes the 101 head', async (t) => {
  t.equal(switchingProtocols('dGhlIHNhbXBsZSBub25jZQ==', '', ''),
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n')
  t.equal(switchingProtocols('dGhlIHNhbXBsZSBub25jZQ==', 'chat', 'permessage-deflate'),
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n' +
    'Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n')
})

t.test('hasToken: comma-separated, case-insensitive, whole tokens only', async (t) => {
  t.equal(hasToken('Upgrade', 'upgrade'), true)
  t.equal(hasToken('keep-alive, Upgrade', 'upgrade'), true)
  t.equal(hasToken('keep-alive,upgrade ', 'upgrade'), true)
  t.equal(hasToken('UPGRADE', 'upgrade'), true)
  t.equal(hasToken('upgrades', 'upgrade'), false)
  t.equal(hasToken('keep-alive', 'upgrade'), false)
  t.equal(hasToken('', 'upgrade'), false)
  t.equal(hasToken(undefined, 'upgrade'), false)
})

t.test('checkHandshake: a valid request returns the key', async (t) => {
  t.equal(checkHandshake(fakeRequest({})), 'dGhlIHNhbXBsZSBub25jZQ==')
  t.equal(checkHandshake(fakeRequest({ major: 2, minor: 0 })), 'dGhlIHNhbXBsZSBub25jZQ==', 'HTTP/2 is later than 1.1')
  t.equal(checkHandshake(fakeRequest({ headers: { upgrade: 'WebSocket', connection: 'keep-alive, Upgrade' } })),
    'dGhlIHNhbXBsZSBub25jZQ==')
  t.equal(checkHandshake(fakeRequest({ headers: { 'content-length': '0' } })), 'dGhlIHNhbXBsZSBub25jZQ==', 'Content-Length: 0 is no body')
  t.equal(checkHandshake(fakeRequest({ headers: { 'sec-websocket-key': '  dGhlIHNhbXBsZSBub25jZQ==  ' } })),
    'dGhlIHNhbXBsZSBub25jZQ==', 'surrounding whitespace is not part of the key')
})

t.test('checkHandshake: each rule refuses with its status and reason', async (t) => {
  const cases: Array<[string, Parameters<typeof fakeRequest>[0], number, RegExp]> = [
    ['POST', { method: 'POST' }, 405, /GET/],
    ['HTTP/1.0', { major: 1, minor: 0 }, 400, /HTTP\/1\.1/],
    ['HTTP/0.9', { major: 0, minor: 9 }, 400, /HTTP\/1\.1/],
    ['no Host', { headers: { host: undefined } }, 400, /Host/],
    ['empty Host', { headers: { host: '' } }, 400, /Host/],
    ['no Upgrade', { headers: { upgrade: undefined } }, 400, /Upgrade/],
    ['Upgrade: h2c', { headers: { upgrade: 'h2c' } }, 400, /Upgrade/],
    ['Connection without upgrade', { headers: { connection: 'keep-alive' } }, 400, /Connection/],
    ['no version', { headers: { 'sec-websocket-version': undefined } }, 426, /13/],
    ['version 8', { headers: { 'sec-websocket-version': '8' } }, 426, /13/],
    ['versions 13, 8', { headers: { 'sec-websocket-version': '13, 8' } }, 426, /13/],
    ['no key', { headers: { 'sec-websocket-key': undefined } }, 400, /Key/],
    ['short key', { headers: { 'sec-websocket-key': 'AAAA' } }, 400, /16-byte/],
    ['17-byte key', { headers: { 'sec-websocket-key': 'AAAAAAAAAAAAAAAAAAAAAAA=' } }, 400, /16-byte/],
    ['15-byte key', { headers: { 'sec-websocket-key': 'AAAAAAAAAAAAAAAAAAAA' } }, 400, /16-byte/],
    ['not base64', { headers: { 'sec-websocket-key': 'AAAAAAAAAAAAAAAAAAAA-_==' } }, 400, /16-byte/],
    ['two keys joined by Node', { headers: { 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==' } }, 400, /exactly one/],
    ['a body (Content-Length)', { headers: { 'content-length': '5' } }, 400, /must not have a body \(Content-Length: "5"\)/],
    ['a body (Transfer-Encoding)', { headers: { 'transfer-encoding': 'chunked' } }, 400, /must not have a body \(Transfer-Encoding: "chunked"\)/]
  ]
  for (const [name, fields, status, reason] of cases) {
    const r = rejection(checkHandshake(fakeRequest(fields)))
    t.equal(r.status, status, `${name}: status`)
    t.match(r.reason, reason, `${name}: reason`)
  }
  t.same(rejection(checkHandshake(fakeRequest({ headers: { 'sec-websocket-version': '8' } }))).headers,
    { 'sec-websocket-version': '13' }, '426 advertises the supported version')
  t.same(rejection(checkHandshake(fakeRequest({ method: 'PUT' }))).headers, { allow: 'GET' })
})

t.test('over TCP', async (t) => {
  const { app, logs } = await buildApp()
  const opened: string[] = []
  app.get('/ws', { websocket: true }, (socket, request) => {
    opened.push(request.url)
    socket.on('message', (data) => socket.send('echo:' + data.toString()))
  })
  app.route({ method: ['GET', 'POST'], url: '/both-methods', websocket: true, handler: () => {} } as never)
  const port = await listen(app)
  t.teardown(() => app.close())

  t.test('a valid handshake gets 101 with the accept key, nothing else to negotiate', async (t) => {
    const key = 'dGhlIHNhbXBsZSBub25jZQ=='
    const ws = await RawWs.connect(port, '/ws', { headers: { 'Sec-WebSocket-Key': key }, passive: true })
    t.teardown(() => ws.destroy())
    t.equal(ws.statusLine, 'HTTP/1.1 101 Switching Protocols')
    t.equal(ws.responseHeaders.upgrade, 'websocket')
    t.equal(ws.responseHeaders.connection, 'Upgrade')
    t.equal(ws.responseHeaders['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=')
    t.equal(ws.responseHeaders['sec-websocket-protocol'], undefined, 'no protocol offered, none chosen')
    t.equal(ws.responseHeaders['sec-websocket-extensions'], undefined)
    t.equal(ws.responseHeaders['content-length'], undefined, 'a 101 has no body framing')
  })

  t.test('the connection carries frames after the 101', async (t) => {
    const ws = await RawWs.connect(port, '/ws', { passive: true })
    t.teardown(() => ws.destroy())
    ws.write(frame(0x1, 'hello'))
    const reply = await ws.nextFrame()
    t.equal(reply.opcode, 0x1)
    t.equal(reply.masked, false, 'server frames are not masked')
    t.equal(reply.payload.toString(), 'echo:hello')
  })

  t.test('Connection as a token list, Upgrade in any case', async (t) => {
    const variants: Array<Record<string, string>> = [
      { Connection: 'keep-alive, Upgrade' },
      { Connection: 'upgrade' },
      { Connection: 'Upgrade, keep-alive' },
      { Upgrade: 'WebSocket' },
      { Upgrade: 'WEBSOCKET' },
      { Upgrade: 'websocket', Connection: 'KEEP-ALIVE,UPGRADE' }
    ]
    for (const headers of variants) {
      const ws = await RawWs.connect(port, '/ws', { headers, passive: true })
      ws.destroy()
      t.equal(ws.status, 101, JSON.stringify(headers))
    }
  })

  t.test('wrong or missing version: 426 with Sec-WebSocket-Version: 13, connection ended', async (t) => {
    for (const version of ['8', '12', '14', null]) {
      const r = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Version': version }))
      t.equal(r.statusLine, 'HTTP/1.1 426 Upgrade Required', `version ${version}`)
      t.equal(r.headers['sec-websocket-version'], '13')
      t.equal(r.headers.connection, 'close')
      t.equal(r.headers['sec-websocket-accept'], undefined)
    }
  })

  t.test('malformed keys: 400 with a short reason, connection ended', async (t) => {
    const variants: Array<[string, string | string[] | null]> = [
      ['missing', null],
      ['duplicate', [newKey(), newKey()]],
      ['duplicate identical', ['dGhlIHNhbXBsZSBub25jZQ==', 'dGhlIHNhbXBsZSBub25jZQ==']],
      ['short', 'c2hvcnQ='],
      ['17 bytes', Buffer.alloc(17, 1).toString('base64')],
      ['not base64', '!!!!!!!!!!!!!!!!!!!!!!==']
    ]
    for (const [name, key] of variants) {
      const r = await rawHttp(port, handshake('/ws', port, { 'Sec-WebSocket-Key': key }))
      t.equal(r.statusLine, 'HTTP/1.1 400 Bad Request', name)
      const body = JSON.parse(r.body) as { statusCode: number, message: string }
      t.equal(body.statusCode, 400, name)
      t.match(body.message, /Sec-WebSocket-Key/, `${name}: reason names the header`)
      t.ok(body.message.length < 200, 'short reason')
    }
  })

  t.test('HTTP/1.0: 400', async (t) => {
    const r = await rawHttp(port, handshake('/ws', port, {}, 'GET /ws HTTP/1.0'))
    t.equal(r.status, 400)
    t.match(JSON.parse(r.body), { message: /HTTP\/1\.1/ })
  })

  t.test('missing Host: 400', async (t) => {
    const r = await rawHttp(port, handshake('/ws', port, { Host: null }))
    t.equal(r.status, 400)
    t.match(JSON.parse(r.body), { message: /Host/ })
  })

  t.test('Upgrade to another protocol: 400', async (t) => {
    const r = await rawHttp(port, handshake('/ws', port, { Upgrade: 'h2c' }))
    t.equal(r.status, 400)
    t.match(JSON.parse(r.body), { message: /websocket/ })
  })

  t.test('non-GET: 405 with Allow: GET on a route that takes the method, 404 on a GET-only route, never 101', async (t) => {
    const r = await rawHttp(port, handshake('/both-methods', port, { 'Content-Length': '0' }, 'POST /both-methods HTTP/1.1'))
    t.equal(r.statusLine, 'HTTP/1.1 405 Method Not Allowed')
    t.equal(r.headers.allow, 'GET')
    const r2 = await rawHttp(port, handshake('/ws', port, { 'Content-Length': '0' }, 'POST /ws HTTP/1.1'))
    t.equal(r2.status, 404, 'Fastify has no POST /ws route')
  })

  t.test('every refusal is logged with its reason', async (t) => {
    const refused = logs.find('WebSocket upgrade refused')
    t.ok(refused.some((l) => /Sec-WebSocket-Version/.test(l.msg)), 'version refusal logged')
    t.ok(refused.some((l) => /Sec-WebSocket-Key/.test(l.msg)), 'key refusal logged')
    t.ok(refused.some((l) => /HTTP\/1\.1/.test(l.msg)), 'HTTP/1.0 refusal logged')
    t.ok(refused.every((l) => typeof l.reason === 'string' && typeof l.status === 'number'), 'reason and status fields')
  })

  t.test('a client that resets right after its request does not crash the server', async (t) => {
    for (let i = 0; i < 20; i++) {
      const socket = connect({ host: '127.0.0.1', port })
      socket.on('error', () => {})
      await within(new Promise<void>((resolve) => socket.once('connect', () => resolve())), 2000, 'connect')
      socket.write(i % 2 === 0 ? handshake('/ws', port) : handshake('/ws', port, { 'Sec-WebSocket-Version': '8' }))
      socket.resetAndDestroy()
    }
    // A truncated request (head never completed) then closed.
    const partial = connect({ host: '127.0.0.1', port })
    partial.on('error', () => {})
    partial.end('GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConn')
    const ws = await RawWs.connect(port, '/ws', { passive: true })
    t.teardown(() => ws.destroy())
    t.equal(ws.status, 101, 'the server still accepts handshakes')
    t.ok(opened.length > 0)
  })
})
