// Lifecycle: app.close() closes sockets with 1001 (destroying peers that never answer after closeTimeout),
// websocketServer.clients, injectWS, and maxConnections.
import t from 'tap'
import WebSocketClient from 'ws'
import type { WebSocket, HandshakeRejectedError } from '../../lib/index.js'
import {
  buildApp, listen, handshake, rawHttp, RawWs, openWs, parseClose, closeFrame, frame, within, delay
} from '../helpers/index.js'

function nextMessage (ws: WebSocket, ms = 2000): Promise<string> {
  return within(new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString()))), ms, 'message')
}

function closeEvent (ws: WebSocket, ms = 3000): Promise<[number, string]> {
  return within(new Promise<[number, string]>((resolve) => ws.once('close', (code, reason) => resolve([code, reason]))), ms, 'close event')
}

t.test('app.close(): open sockets get Close 1001 and the close completes', async (t) => {
  const { app } = await buildApp({ closeTimeout: 10_000 })
  const serverCloses: number[] = []
  app.get('/ws', { websocket: true }, (socket) => {
    socket.on('close', (code) => serverCloses.push(code))
  })
  const port = await listen(app)
  t.teardown(() => app.close())

  // A raw peer that answers the Close.
  const raw = await openWs(t, port, '/ws')
  // A ws client, which answers by itself.
  const client = new WebSocketClient(`ws://127.0.0.1:${port}/ws`)
  t.teardown(() => client.terminate())
  await within(new Promise((resolve, reject) => { client.once('open', resolve); client.once('error', reject) }), 3000, 'ws open')
  const clientClosed = within(new Promise<[number, string]>((resolve) => client.once('close', (code, reason) => resolve([code, reason.toString()]))), 3000, 'ws close')
  t.equal(app.websocketServer.clients.size, 2)

  const started = Date.now()
  const closing = app.close()
  const close = await raw.nextFrame()
  t.equal(close.opcode, 0x8)
  t.same(parseClose(close.payload), { code: 1001, reason: 'Server shutting down' })
  raw.write(closeFrame(1001))
  t.same(await clientClosed, [1001, 'Server shutting down'], 'the ws client saw 1001')
  await within(closing, 3000, 'app.close()')
  t.ok(Date.now() - started < 5000, 'completed by the handshake, not by the 10 s closeTimeout')
  await raw.closed(3000)
  t.equal(app.websocketServer.clients.size, 0)
  t.same(serverCloses.sort(), [1001, 1001], 'each server socket closed with the echoed 1001')
})

t.test('no new upgrades once closing: 503', async (t) => {
  const { app, logs } = await buildApp({ closeTimeout: 1000 })
  app.get('/ws', { websocket: true }, () => {})
  const port = await listen(app)
  t.teardown(() => app.close())
  const silent = await openWs(t, port, '/ws') // never answers the Close: keeps app.close() pending
  const closing = app.close()
  t.equal((await silent.nextFrame()).opcode, 0x8)
  const r = await rawHttp(port, handshake('/ws', port))
  t.equal(r.statusLine, 'HTTP/1.1 503 Service Unavailable')
  t.match(JSON.parse(r.body), { message: /shutting down/ })
  t.equal(logs.find('WebSocket upgrade refused: server is shutting down').length, 1, 'logged')
  await within(closing, 4000, 'app.close()')
})

t.test('a peer that never answers the Close is destroyed after closeTimeout', async (t) => {
  const { app } = await buildApp({ closeTimeout: 300 })
  app.get('/ws', { websocket: true }, () => {})
  const port = await listen(app)
  t.teardown(() => app.close())
  const ws = await RawWs.connect(port, '/ws', { passive: true })
  t.teardown(() => ws.destroy())
  const started = Date.now()
  const closing = app.close()
  const close = await ws.nextFrame()
  t.equal(parseClose(close.payload).code, 1001)
  await within(ws.closed(4000), 4000, 'server destroys the connection')
  const elapsed = Date.now() - started
  t.ok(elapsed >= 250, `not before closeTimeout (${elapsed} ms)`)
  await within(closing, 4000, 'app.close() resolves')
  t.equal(app.websocketServer.clients.size, 0)
})

t.test('a route closeTimeout overrides the plugin one', async (t) => {
  const { app } = await buildApp({ closeTimeout: 60_000 })
  app.get('/ws', { websocket: { closeTimeout: 200 } }, (socket) => { socket.close(4000, 'bye') })
  const port = await listen(app)
  t.teardown(() => app.close())
  const ws = await openWs(t, port, '/ws')
  t.same(parseClose((await ws.nextFrame()).payload), { code: 4000, reason: 'bye' })
  await ws.closed(3000)
  t.pass('destroyed after the route closeTimeout, long before the plugin one')
})

t.test('websocketServer.clients tracks open sockets', async (t) => {
  const { app } = await buildApp()
  const server: WebSocket[] = []
  app.get('/ws', { websocket: true }, (socket) => { server.push(socket) })
  const port = await listen(app)
  t.teardown(() => app.close())
  t.equal(app.websocketServer.clients.size, 0)
  const a = await openWs(t, port, '/ws')
  const b = await openWs(t, port, '/ws')
  t.equal(app.websocketServer.clients.size, 2)
  t.same([...app.websocketServer.clients], server, 'the very sockets the handlers got')
  const closedA = new Promise<void>((resolve) => server[0]!.once('close', () => resolve()))
  a.write(closeFrame(1000))
  await within(closedA, 3000, 'server socket a closed')
  t.equal(app.websocketServer.clients.size, 1)
  t.equal(app.websocketServer.clients.has(server[1]!), true)
  b.destroy()
  await within(new Promise<void>((resolve) => server[1]!.once('close', () => resolve())), 3000, 'server socket b closed')
  t.equal(app.websocketServer.clients.size, 0, 'an abrupt disconnect is released too')
})

t.test('injectWS: a connected client socket, in memory', async (t) => {
  const { app } = await buildApp({ ports: undefined }) // the default port policy: injectWS arrives on port 80
  const serverEvents: string[] = []
  app.get('/echo/:name', { websocket: true }, (socket, request) => {
    socket.send(`hello ${(request.params as { name: string }).name}`)
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    socket.on('close', (code, reason) => serverEvents.push(`close ${code} ${reason}`))
  })
  app.get('/headers', { websocket: true }, (socket, request) => {
    socket.send(JSON.stringify({ auth: request.headers.authorization, origin: request.headers.origin ?? null }))
  })
  app.get('/guarded', { websocket: true, onRequest: async (_request, reply) => reply.code(401).send({ nope: true }) }, () => {})
  app.get('/http', async () => 'plain')
  await app.ready()
  t.teardown(() => app.close())

  const ws = await app.injectWS('/echo/bob')
  t.equal(ws.readyState, ws.OPEN, 'resolves to an open socket')
  t.equal(await nextMessage(ws), 'hello bob')
  ws.send('ping me')
  t.equal(await nextMessage(ws), 'ping me')
  const binary = new Promise<[Buffer, boolean]>((resolve) => ws.once('message', (d, isBinary) => resolve([d, isBinary])))
  ws.send(Buffer.from([9, 8, 7]))
  const [data, isBinary] = await within(binary, 2000, 'binary echo')
  t.same([...data], [9, 8, 7])
  t.equal(isBinary, true)
  t.equal(app.websocketServer.clients.size, 1)
  const done = closeEvent(ws)
  ws.close(4001, 'client done')
  t.same(await done, [4001, ''], 'the server echoed our close code (its echo carries no reason)')
  await delay(10)
  t.same(serverEvents, ['close 4001 client done'])
  t.equal(app.websocketServer.clients.size, 0)

  const h = await app.injectWS('/headers', { headers: { authorization: 'Bearer xyz' }, origin: 'http://localhost' })
  t.teardown(() => h.terminate())
  t.same(JSON.parse(await nextMessage(h)), { auth: 'Bearer xyz', origin: 'http://localhost' })

  const rejected = async (path: string) => app.injectWS(path).then(() => null, (e: unknown) => e as HandshakeRejectedError)
  const e404 = await rejected('/missing')
  t.equal(e404?.statusCode, 404, 'unknown path')
  t.equal(e404?.code, 'FST_WS_HANDSHAKE_REJECTED')
  const e401 = await rejected('/guarded')
  t.equal(e401?.statusCode, 401, "a hook's reply")
  t.same(JSON.parse(e401?.body ?? 'null'), { nope: true })
  const eHttp = await rejected('/http')
  t.equal(eHttp?.statusCode, 200, 'a plain route answers HTTP: rejected with its status')
  const e403 = await app.injectWS('/headers', { origin: 'https://evil.example' }).then(() => null, (e: unknown) => e as HandshakeRejectedError)
  t.equal(e403?.statusCode, 403)
})

t.test('injectWS before app.ready() waits for the boot, like app.inject()', async (t) => {
  const { app } = await buildApp()
  // Registered in a child context: its routes exist only once the app has booted.
  app.register(async (child) => { child.get('/late', { websocket: true }, (socket) => { socket.send('booted') }) })
  t.teardown(() => app.close())
  const ws = await app.injectWS('/late')
  t.teardown(() => ws.terminate())
  t.equal(await nextMessage(ws), 'booted')
})

t.test('injectWS sockets get 1001 on app.close()', async (t) => {
  const { app } = await buildApp()
  app.get('/', { websocket: true }, () => {})
  await app.ready()
  const ws = await app.injectWS('/')
  const done = closeEvent(ws)
  await within(app.close(), 3000, 'app.close()')
  t.same(await done, [1001, 'Server shutting down'])
})

t.test('maxConnections: 503 past the limit, plugin-wide and per route', async (t) => {
  const { app } = await buildApp({ maxConnections: 2 })
  app.get('/a', { websocket: true }, (socket) => { socket.send('a') })
  app.get('/b', { websocket: true }, (socket) => { socket.send('b') })
  app.get('/one', { websocket: { maxConnections: 1 } }, (socket) => { socket.send('one') })
  const port = await listen(app)
  t.teardown(() => app.close())

  const a = await openWs(t, port, '/a')
  const b = await openWs(t, port, '/b')
  const r = await rawHttp(port, handshake('/a', port))
  t.equal(r.statusLine, 'HTTP/1.1 503 Service Unavailable', 'the plugin limit counts every route')
  t.match(JSON.parse(r.body), { message: /maxConnections/ })
  t.equal(app.websocketServer.clients.size, 2)

  // Free a slot.
  await a.nextFrame()
  a.write(closeFrame(1000))
  await a.closed(3000)
  await delay(20)
  const one = await openWs(t, port, '/one')
  t.equal((await one.nextFrame()).payload.toString(), 'one')
  b.write(closeFrame(1000))
  await b.closed(3000)
  await delay(20)
  const r2 = await rawHttp(port, handshake('/one', port))
  t.equal(r2.status, 503, 'the route limit of 1 applies though the plugin has room')
  const again = await openWs(t, port, '/a')
  t.equal((await again.nextFrame()).payload.toString(), 'a', 'other routes still have room')
  // The route counter is released on close.
  one.write(frame(0x8, Buffer.from([0x03, 0xe8])))
  await one.closed(3000)
  await delay(20)
  const reopened = await openWs(t, port, '/one')
  t.equal((await reopened.nextFrame()).payload.toString(), 'one')
})
