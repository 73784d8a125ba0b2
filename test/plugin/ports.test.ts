// The port policy: upgrades only on the ports a deployment expects ([80, 443] by default, or 'any', or a list).
// The port is the connection's local port, or behind a trusted proxy the forwarded one.
import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { compileTrust, clientPort, portAllowed } from '../../lib/http/ports.js'
import type { HandshakeRejectedError } from '../../lib/index.js'
import { buildApp, listen, handshake, rawHttp, openWs } from '../helpers/index.js'

function fakeReq (localPort: number | undefined, remoteAddress: string, headers: Record<string, string | string[]> = {}): IncomingMessage {
  return { socket: { localPort, remoteAddress }, headers } as unknown as IncomingMessage
}

t.test('compileTrust follows Fastify trustProxy semantics', async (t) => {
  t.equal(compileTrust(undefined), null)
  t.equal(compileTrust(false), null)
  t.equal(compileTrust(true)!('1.2.3.4', 0), true)
  t.equal(compileTrust(1)!('127.0.0.1', 0), false, 'hop counts cannot validate the peer: fail closed, as Fastify does')
  t.equal(compileTrust('127.0.0.1')!('127.0.0.1', 0), true)
  t.equal(compileTrust('127.0.0.1, 10.0.0.0/8')!('10.1.2.3', 0), true)
  t.equal(compileTrust('10.0.0.0/8')!('127.0.0.1', 0), false)
  t.equal(compileTrust(['loopback'])!('127.0.0.1', 0), true)
  const fn = (address: string) => address === '9.9.9.9'
  t.equal(compileTrust(fn), fn)
})

t.test('clientPort: local port, or the forwarded one from a trusted peer', async (t) => {
  const trustAll = compileTrust(true)
  t.equal(clientPort(fakeReq(8080, '127.0.0.1'), null), 8080)
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-port': '443' }), null), 8080, 'no trust: headers ignored')
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-port': '443' }), trustAll), 443)
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-port': '8443, 443' }), trustAll), 443, 'the last hop wins')
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-proto': 'https' }), trustAll), 443)
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-proto': 'HTTP' }), trustAll), 80)
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-proto': 'wss' }), trustAll), 443)
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-proto': 'http, https' }), trustAll), 443)
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-port': '444', 'x-forwarded-proto': 'https' }), trustAll), 444,
    'X-Forwarded-Port wins over the protocol default')
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-port': 'abc' }), trustAll), 8080, 'garbage ignored')
  t.equal(clientPort(fakeReq(8080, '127.0.0.1', { 'x-forwarded-proto': 'gopher' }), trustAll), 8080)
  t.equal(clientPort(fakeReq(8080, '10.0.0.1', { 'x-forwarded-port': '443' }), compileTrust('127.0.0.1')), 8080, 'untrusted peer')
  t.equal(portAllowed(null, undefined), true)
  t.equal(portAllowed(new Set([80]), 80), true)
  t.equal(portAllowed(new Set([80]), 81), false)
  t.equal(portAllowed(new Set([80]), undefined), false)
})

t.test('the default policy refuses an ephemeral port with 403, and warns once on listen', async (t) => {
  const { app, logs } = await buildApp({ ports: undefined })
  app.get('/a', { websocket: true }, () => {})
  app.get('/b', { websocket: true }, () => {})
  app.get('/open', { websocket: { ports: 'any' } }, (socket) => { socket.send('open') })
  app.get('/http', async () => 'plain')
  const port = await listen(app)
  t.teardown(() => app.close())

  const r = await rawHttp(port, handshake('/a', port))
  t.equal(r.statusLine, 'HTTP/1.1 403 Forbidden')
  const body = JSON.parse(r.body) as { message: string }
  t.match(body.message, new RegExp(`port ${port}`), 'the reason names the port')
  t.match(body.message, /"ports" option/, 'and the option')
  t.ok(logs.find('WebSocket upgrade refused').some((l) => l.status === 403), 'refusal logged')

  const ws = await openWs(t, port, '/open')
  t.equal((await ws.nextFrame()).payload.toString(), 'open', "a route with ports: 'any' overrides the default")

  const warnings = logs.lines.filter((l) => l.level === 40 && /ports/.test(l.msg))
  t.equal(warnings.length, 1, 'one warning')
  t.match(warnings[0]!.msg, /"ports" option/, 'naming the option')
  t.match(warnings[0]!.msg, new RegExp(`port ${port}`))
  t.same(warnings[0]!.routes, ['/a', '/b'], 'listing the affected routes (each once, not their HEAD twins)')
  t.equal(warnings[0]!.port, port)
})

t.test('no warning when every WebSocket route accepts the port', async (t) => {
  const { app, logs } = await buildApp({ ports: 'any' })
  app.get('/a', { websocket: true }, () => {})
  await listen(app)
  t.teardown(() => app.close())
  t.equal(logs.lines.filter((l) => l.level === 40).length, 0)
})

t.test("ports: 'any' and a list", async (t) => {
  const { app: probe } = await buildApp()
  const port = await listen(probe)
  await probe.close()

  const { app } = await buildApp({ ports: [port] })
  app.get('/ws', { websocket: true }, (socket) => { socket.send('listed') })
  app.get('/elsewhere', { websocket: { ports: [port + 1, 443] } }, () => {})
  app.get('/any', { websocket: { ports: 'any' } }, (socket) => { socket.send('any') })
  t.teardown(() => app.close())
  try {
    await app.listen({ host: '127.0.0.1', port })
  } catch (err) {
    t.comment(`port ${port} was taken again in between (${(err as Error).message}): nothing to test`)
    return
  }
  const a = await openWs(t, port, '/ws')
  t.equal((await a.nextFrame()).payload.toString(), 'listed')
  const b = await openWs(t, port, '/any')
  t.equal((await b.nextFrame()).payload.toString(), 'any')
  const r = await rawHttp(port, handshake('/elsewhere', port))
  t.equal(r.status, 403, 'a route list without this port refuses')
})

t.test('trustProxy: X-Forwarded-Port, else the X-Forwarded-Proto default port', async (t) => {
  const { app } = await buildApp({ ports: [443] }, { trustProxy: true })
  app.get('/ws', { websocket: true }, (socket) => { socket.send('proxied') })
  const port = await listen(app)
  t.teardown(() => app.close())
  const a = await openWs(t, port, '/ws', { 'X-Forwarded-Port': '443' })
  t.equal((await a.nextFrame()).payload.toString(), 'proxied')
  await openWs(t, port, '/ws', { 'X-Forwarded-Proto': 'https' })
  await openWs(t, port, '/ws', { 'X-Forwarded-Proto': 'http', 'X-Forwarded-Port': '443' })
  t.equal((await rawHttp(port, handshake('/ws', port, { 'X-Forwarded-Proto': 'http' }))).status, 403, 'http means port 80')
  t.equal((await rawHttp(port, handshake('/ws', port, { 'X-Forwarded-Port': '8443' }))).status, 403)
  t.equal((await rawHttp(port, handshake('/ws', port))).status, 403, 'no forwarded headers: the local port')
  // The same-origin default compares the Origin with the forwarded port too.
  await openWs(t, port, '/ws', { 'X-Forwarded-Proto': 'https', Host: 'app.example.com', Origin: 'https://app.example.com' })
  t.equal((await rawHttp(port, handshake('/ws', port, {
    'X-Forwarded-Proto': 'https', Host: 'app.example.com', Origin: 'https://evil.example'
  }))).status, 403)
})

t.test('proxy headers from an untrusted peer are ignored', async (t) => {
  for (const trustProxy of [false, '10.0.0.0/8', 2]) {
    const { app } = await buildApp({ ports: [443] }, { trustProxy: trustProxy as never })
    app.get('/ws', { websocket: true }, () => {})
    const port = await listen(app)
    const r = await rawHttp(port, handshake('/ws', port, { 'X-Forwarded-Port': '443', 'X-Forwarded-Proto': 'https' }))
    t.equal(r.status, 403, `trustProxy ${JSON.stringify(trustProxy)}`)
    await app.close()
  }
})

t.test('injectWS arrives on port 80 unless told otherwise', async (t) => {
  const { app } = await buildApp({ ports: [443] })
  app.get('/', { websocket: true }, (socket) => { socket.send('tls') })
  await app.ready()
  t.teardown(() => app.close())
  const err = await app.injectWS('/').then(() => null, (e: unknown) => e as HandshakeRejectedError)
  t.equal(err?.statusCode, 403)
  const ws = await app.injectWS('/', { port: 443 })
  t.teardown(() => ws.terminate())
  t.equal(await new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString()))), 'tls')
})
