// Refused upgrades: the socket is destroyed once the answer is flushed (a client that never closes its side cannot
// hold the descriptor), the handshake timer forgets it, each refusal is logged exactly once; an upgrade request
// with a body is refused with 400 instead of having its body parsed as frames.
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { buildApp, listen, handshake, within, delay, parseHead, openWs, guardUnhandled, type LogCapture } from '../helpers/index.js'

/** The server side of each accepted TCP connection, by the client's port. */
function trackServerSockets (app: FastifyInstance): Map<number, Socket> {
  const sockets = new Map<number, Socket>()
  app.server.on('connection', (socket: Socket) => { if (socket.remotePort !== undefined) sockets.set(socket.remotePort, socket) })
  return sockets
}

interface HalfOpen {
  client: Socket
  status: number
  body: string
  /** Resolves when the server ended its side (the client saw 'end'). */
  ended: Promise<void>
}

/**
 * Send `request` from a client that keeps its own side open (allowHalfOpen, never calls end()), and resolve once a
 * complete response (Content-Length framed) has arrived. A reset is tolerated: the test looks at the server side.
 */
function halfOpenClient (t: Test, port: number, request: string | Buffer): Promise<HalfOpen> {
  const client = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  t.teardown(() => client.destroy())
  client.on('error', () => {})
  const ended = new Promise<void>((resolve) => {
    client.once('end', () => resolve())
    client.once('close', () => resolve())
  })
  return within(new Promise<HalfOpen>((resolve) => {
    let data = ''
    const onData = (c: Buffer): void => {
      data += c.toString('latin1')
      const head = parseHead(data)
      if (head === null) return
      const length = Number(head.headers['content-length'] ?? 0)
      if (data.length < head.bodyStart + length) return
      client.removeListener('data', onData)
      resolve({ client, status: head.status, body: data.slice(head.bodyStart, head.bodyStart + length), ended })
    }
    client.on('data', onData)
    client.write(request)
  }), 3000, 'refusal response')
}

function serverSocketClosed (sockets: Map<number, Socket>, client: Socket, ms: number): Promise<void> {
  const server = sockets.get(client.localPort!)
  if (server === undefined) return Promise.reject(new Error('server-side socket not found'))
  if (server.closed) return Promise.resolve()
  return within(new Promise<void>((resolve) => server.once('close', () => resolve())), ms, 'server-side socket closed')
}

function refusalLines (logs: LogCapture) {
  return logs.find('WebSocket upgrade refused')
}

for (const handshakeTimeout of [0, 1000]) {
  t.test(`refused upgrades are destroyed once answered, from a client that never closes (handshakeTimeout ${handshakeTimeout})`, async (t) => {
    const guard = guardUnhandled()
    t.teardown(guard.stop)
    const { app, logs } = await buildApp({ handshakeTimeout, origins: 'https://good.example' })
    app.get('/ws', { websocket: true }, () => {})
    app.get('/guarded', { websocket: true, onRequest: async (_request, reply) => reply.code(401).send({ denied: true }) }, () => {})
    app.get('/plain', async () => ({ plain: true }))
    const sockets = trackServerSockets(app)
    const port = await listen(app)
    t.teardown(() => app.close())

    const cases: Array<[string, string, number]> = [
      ['Origin refused (the plugin via Fastify reply)', handshake('/ws', port, { Origin: 'https://evil.example' }), 403],
      ['malformed key', handshake('/ws', port, { Origin: 'https://good.example', 'Sec-WebSocket-Key': 'short' }), 400],
      ["a hook's 401", handshake('/guarded', port, { Origin: 'https://good.example' }), 401],
      ['unknown path (router 404)', handshake('/missing', port), 404],
      ['a plain HTTP route', handshake('/plain', port), 200]
    ]
    for (const [name, request, status] of cases) {
      const r = await halfOpenClient(t, port, request)
      t.equal(r.status, status, `${name}: answered ${status}`)
      await within(r.ended, 1000, `${name}: the server ends its side`)
      await serverSocketClosed(sockets, r.client, 500).then(
        () => t.pass(`${name}: the server-side socket is closed promptly`),
        (err: Error) => t.fail(`${name}: ${err.message}`))
    }
    // Past any handshake deadline: no socket was left for the timer to find.
    await delay(handshakeTimeout + 400)
    t.same(logs.find('handshakeTimeout'), [], 'no timeout warning for refused upgrades')
    t.same(guard.errors, [], 'no uncaught exception')
  })
}

t.test('a 503 answered on the raw socket while shutting down is destroyed once flushed', async (t) => {
  const { app } = await buildApp({ closeTimeout: 2000, handshakeTimeout: 0 })
  app.get('/ws', { websocket: true }, () => {})
  const sockets = trackServerSockets(app)
  const port = await listen(app)
  t.teardown(() => app.close())
  const silent = await openWs(t, port, '/ws') // never answers the Close: keeps app.close() pending
  const closing = app.close()
  t.equal((await silent.nextFrame()).opcode, 0x8)
  const r = await halfOpenClient(t, port, handshake('/ws', port))
  t.equal(r.status, 503)
  await within(r.ended, 1000, 'the server ends its side')
  await serverSocketClosed(sockets, r.client, 500).then(
    () => t.pass('the server-side socket is closed promptly'),
    (err: Error) => t.fail(err.message))
  silent.socket.destroy()
  await within(closing, 4000, 'app.close()')
})

t.test('each refusal is logged exactly once, at one level, with status, reason and origin', async (t) => {
  const { app, logs } = await buildApp({ origins: 'https://good.example' })
  app.get('/ws', { websocket: true }, () => {})
  app.get('/throws', { websocket: { origins: () => { throw new Error('origin lookup failed') } } }, () => {})
  app.get('/rejects', { websocket: { origins: async () => { throw new Error('async origin lookup failed') } } }, () => {})
  const port = await listen(app)
  t.teardown(() => app.close())

  const origin = await halfOpenClient(t, port, handshake('/ws', port, { Origin: 'https://evil.example' }))
  t.equal(origin.status, 403)
  await within(origin.ended, 1000, 'ended')
  let lines = refusalLines(logs)
  t.equal(lines.length, 1, 'an Origin refusal is logged once')
  t.match(lines[0], { level: 30, status: 403, origin: 'https://evil.example', reason: /evil\.example/ })

  const key = await halfOpenClient(t, port, handshake('/ws', port, { Origin: 'https://good.example', 'Sec-WebSocket-Version': '8' }))
  t.equal(key.status, 426)
  await within(key.ended, 1000, 'ended')
  lines = refusalLines(logs)
  t.equal(lines.length, 2, 'a handshake refusal is logged once')
  t.match(lines[1], { level: 30, status: 426, origin: 'https://good.example', reason: /Sec-WebSocket-Version/ })

  const failed = await halfOpenClient(t, port, handshake('/throws', port, { Origin: 'https://good.example' }))
  t.equal(failed.status, 500)
  await within(failed.ended, 1000, 'ended')
  lines = refusalLines(logs)
  t.equal(lines.length, 3, 'a failing origin function: one refusal line')
  t.match(lines[2], { status: 500, origin: 'https://good.example', reason: /Origin check failed/, err: { message: 'origin lookup failed' } })
  t.equal(logs.lines.filter((l) => l.err !== undefined && (l.err as { message?: string }).message === 'origin lookup failed').length, 1,
    'the error is logged once, on the refusal line')

  const rejected = await halfOpenClient(t, port, handshake('/rejects', port, { Origin: 'https://good.example' }))
  t.equal(rejected.status, 500)
  await within(rejected.ended, 1000, 'ended')
  lines = refusalLines(logs)
  t.equal(lines.length, 4, 'a rejecting origin function: one refusal line')
  t.match(lines[3], { status: 500, reason: /Origin check failed/, err: { message: 'async origin lookup failed' } })
})

t.test('an upgrade request with a body is refused with 400, its body never parsed as frames', async (t) => {
  const guard = guardUnhandled()
  t.teardown(guard.stop)
  const { app } = await buildApp()
  let opened = 0
  app.get('/ws', { websocket: true }, (socket) => {
    opened++
    socket.on('message', (data) => socket.send('got ' + data.toString()))
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  // A masked text frame "hi" as the body: accepted, it would be parsed as a message.
  const frame = Buffer.from([0x81, 0x82, 1, 2, 3, 4, 'h'.charCodeAt(0) ^ 1, 'i'.charCodeAt(0) ^ 2])
  const cases: Array<[string, Record<string, string>, Buffer, RegExp]> = [
    ['Content-Length: 8', { 'Content-Length': '8' }, frame, /Content-Length/],
    ['Transfer-Encoding: chunked', { 'Transfer-Encoding': 'chunked' }, Buffer.from('8\r\n' + frame.toString('latin1') + '\r\n0\r\n\r\n', 'latin1'), /Transfer-Encoding/],
    ['Transfer-Encoding: gzip', { 'Transfer-Encoding': 'gzip' }, frame, /Transfer-Encoding/]
  ]
  for (const [name, headers, body, reason] of cases) {
    const r = await halfOpenClient(t, port, Buffer.concat([Buffer.from(handshake('/ws', port, headers)), body]))
    t.equal(r.status, 400, `${name}: 400`)
    t.match(JSON.parse(r.body || 'null'), { statusCode: 400, message: reason }, `${name}: the reason names the header`)
  }
  t.equal(opened, 0, 'no socket was opened')
  // Content-Length: 0 is no body.
  const ok = await openWs(t, port, '/ws', { 'Content-Length': '0' })
  t.equal(ok.status, 101, 'Content-Length: 0 is accepted')
  t.same(guard.errors, [], 'no uncaught exception')
})

t.test('a client that leaves while the hooks run is not upgraded, not counted, and forgotten by the timer', async (t) => {
  const { app, logs } = await buildApp({ maxConnections: 1, handshakeTimeout: 300 })
  app.get('/ws', { websocket: true, onRequest: async () => { await delay(100) } }, (socket) => { socket.send('hi') })
  const port = await listen(app)
  t.teardown(() => app.close())
  for (const leave of ['end', 'destroy', 'reset'] as const) {
    const client = connect({ host: '127.0.0.1', port })
    client.on('error', () => {})
    await within(new Promise((resolve) => client.once('connect', resolve)), 1000, 'connect')
    client.write(handshake('/ws', port))
    await delay(20)
    if (leave === 'end') client.end()
    else if (leave === 'destroy') client.destroy()
    else client.resetAndDestroy()
    await delay(150)
    t.equal(app.websocketServer.clients.size, 0, `${leave}: nothing upgraded or counted`)
  }
  // A FIN (end, or destroy, which also ends gracefully) is a half-close: that client may still read, so it gets
  // its 101 and the connection closes at once (nothing stays counted). The one that reset is abandoned, logged once.
  t.equal(logs.find('WebSocket upgrade abandoned').length, 1, 'the reset client is abandoned, logged once')
  await delay(400)
  t.same(logs.find('handshakeTimeout'), [], 'no timeout warning for them')
  const ok = await openWs(t, port, '/ws')
  t.equal(ok.status, 101, 'the single slot (maxConnections: 1) is free')
})
