// Routes: upgrades go through Fastify's router, so params, query, constraints, hooks, schemas,
// decorators and 404 handling apply before any 101; handler errors close with 1011.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import websocket, { type WebSocket } from '../../lib/index.js'
import {
  buildApp, listen, handshake, rawHttp, RawWs, frame, closeFrame, parseClose, within, openWs
} from '../helpers/index.js'

t.test('params, query and the request reach the handler', async (t) => {
  const { app } = await buildApp()
  app.get('/rooms/:room/users/:user', { websocket: true }, (socket, request) => {
    socket.send(JSON.stringify({ params: request.params, query: request.query, url: request.url, method: request.method }))
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const ws = await openWs(t, port, '/rooms/lobby/users/42?token=abc&x=1')
  const frame = await ws.nextFrame()
  t.same(JSON.parse(frame.payload.toString()), {
    params: { room: 'lobby', user: '42' },
    query: { token: 'abc', x: '1' },
    url: '/rooms/lobby/users/42?token=abc&x=1',
    method: 'GET'
  })
})

t.test('constraints select the route; no match is a 404', async (t) => {
  const { app } = await buildApp()
  app.get('/c', { websocket: true, constraints: { host: 'a.example' } }, (socket) => { socket.send('route a') })
  app.get('/c', { websocket: true, constraints: { host: 'b.example' } }, (socket) => { socket.send('route b') })
  const port = await listen(app)
  t.teardown(() => app.close())
  for (const host of ['a.example', 'b.example']) {
    const ws = await openWs(t, port, '/c', { Host: host, Origin: null })
    t.equal((await ws.nextFrame()).payload.toString(), `route ${host[0]}`)
  }
  const r = await rawHttp(port, handshake('/c', port, { Host: 'c.example' }))
  t.equal(r.status, 404, 'no route for that host')
})

t.test('hooks run before the 101, in order, and can decorate the request', async (t) => {
  const { app } = await buildApp()
  app.decorateRequest('user', '')
  const order: string[] = []
  app.addHook('onRequest', async (request) => {
    order.push('onRequest');
    (request as unknown as { user: string }).user = 'alice'
  })
  app.get('/hooked', {
    websocket: true,
    preValidation: async () => { order.push('preValidation') },
    preHandler: async () => { order.push('preHandler') }
  }, (socket, request) => {
    order.push('handler')
    socket.send((request as unknown as { user: string }).user)
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const ws = await openWs(t, port, '/hooked')
  t.equal((await ws.nextFrame()).payload.toString(), 'alice')
  t.same(order, ['onRequest', 'preValidation', 'preHandler', 'handler'])
})

t.test('a hook that replies sends exactly that response on the raw socket, no 101, and ends it', async (t) => {
  const { app } = await buildApp()
  let handlerCalls = 0
  const deny = async (_request: unknown, reply: import('fastify').FastifyReply) => {
    return reply.code(401).header('www-authenticate', 'Bearer').header('x-hook', 'yes').send({ denied: true })
  }
  for (const hook of ['onRequest', 'preValidation', 'preHandler'] as const) {
    app.get(`/deny/${hook}`, { websocket: true, [hook]: deny }, () => { handlerCalls++ })
  }
  // A callback-style hook replying, and a hook that throws.
  app.get('/deny-callback', {
    websocket: true,
    onRequest: (_request, reply, done) => { reply.code(403).send('forbidden'); done() }
  }, () => { handlerCalls++ })
  app.get('/hook-throws', {
    websocket: true,
    preHandler: async () => { throw Object.assign(new Error('nope'), { statusCode: 418 }) }
  }, () => { handlerCalls++ })
  const port = await listen(app)
  t.teardown(() => app.close())

  for (const hook of ['onRequest', 'preValidation', 'preHandler']) {
    const r = await rawHttp(port, handshake(`/deny/${hook}`, port))
    t.equal(r.statusLine, 'HTTP/1.1 401 Unauthorized', hook)
    t.equal(r.headers['www-authenticate'], 'Bearer')
    t.equal(r.headers['x-hook'], 'yes')
    t.equal(r.headers['sec-websocket-accept'], undefined)
    t.same(JSON.parse(r.body), { denied: true })
    t.notMatch(r.raw, /101 Switching/, 'no 101 anywhere in the stream')
    t.equal(Number(r.headers['content-length']), Buffer.byteLength(r.body), 'exactly the hook response, nothing after it')
  }
  const r = await rawHttp(port, handshake('/deny-callback', port))
  t.equal(r.status, 403)
  t.equal(r.body, 'forbidden')
  const r2 = await rawHttp(port, handshake('/hook-throws', port))
  t.equal(r2.status, 418)
  t.match(JSON.parse(r2.body), { message: 'nope' })
  t.equal(handlerCalls, 0, 'the WebSocket handler never ran')
})

t.test('schema validation failure: 400, no upgrade', async (t) => {
  const { app } = await buildApp()
  let calls = 0
  app.get('/validated', {
    websocket: true,
    schema: { querystring: { type: 'object', required: ['token'], properties: { token: { type: 'string', minLength: 3 } } } }
  }, (socket) => { calls++; socket.send('ok') })
  const port = await listen(app)
  t.teardown(() => app.close())
  const r = await rawHttp(port, handshake('/validated?token=x', port))
  t.equal(r.status, 400)
  t.match(JSON.parse(r.body), { code: 'FST_ERR_VALIDATION' })
  const r2 = await rawHttp(port, handshake('/validated', port))
  t.equal(r2.status, 400)
  t.equal(calls, 0)
  const ws = await openWs(t, port, '/validated?token=good')
  t.equal((await ws.nextFrame()).payload.toString(), 'ok', 'a valid request is upgraded')
})

t.test('unknown path: 404; non-WebSocket route: its HTTP response, never 101', async (t) => {
  const { app } = await buildApp()
  app.get('/http', async () => ({ hello: 'world' }))
  app.post('/form', async () => ({ posted: true }))
  const port = await listen(app)
  t.teardown(() => app.close())
  const r = await rawHttp(port, handshake('/nope', port))
  t.equal(r.statusLine, 'HTTP/1.1 404 Not Found')
  t.match(JSON.parse(r.body), { statusCode: 404 })
  const r2 = await rawHttp(port, handshake('/http', port))
  t.equal(r2.statusLine, 'HTTP/1.1 200 OK')
  t.same(JSON.parse(r2.body), { hello: 'world' })
  t.notMatch(r2.raw, /101/)
  const r3 = await rawHttp(port, handshake('/form', port, { 'Content-Length': '0' }, 'POST /form HTTP/1.1'))
  t.equal(r3.status, 200)
  t.same(JSON.parse(r3.body), { posted: true })
})

t.test('plain GET to a WebSocket-only route: 426 with Upgrade: websocket', async (t) => {
  const { app } = await buildApp()
  app.get('/only-ws', { websocket: true }, () => {})
  const port = await listen(app)
  t.teardown(() => app.close())
  const res = await app.inject({ method: 'GET', url: '/only-ws' })
  t.equal(res.statusCode, 426)
  t.equal(res.headers.upgrade, 'websocket')
  t.match(res.json(), { statusCode: 426, error: 'Upgrade Required' })
  const r = await rawHttp(port, `GET /only-ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
  t.equal(r.statusLine, 'HTTP/1.1 426 Upgrade Required')
  t.equal(r.headers.upgrade, 'websocket')
  t.equal(r.headers.connection, 'Upgrade, close', 'the client asked to close: the connection is closed (rawHttp waits for it)')
  const r10 = await rawHttp(port, `GET /only-ws HTTP/1.0\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
  t.equal(r10.status, 426, 'HTTP/1.0: answered and closed')
  t.equal(res.headers.connection, 'Upgrade', 'a keep-alive client is told Upgrade')
  const head = await app.inject({ method: 'HEAD', url: '/only-ws' })
  t.equal(head.statusCode, 426, 'the HEAD twin answers the same')
})

t.test('handler + wsHandler on one route', async (t) => {
  const { app } = await buildApp()
  app.route({
    method: 'GET',
    url: '/dual',
    handler: async () => ({ via: 'http' }),
    wsHandler: (socket) => { socket.send('via ws') }
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const res = await app.inject({ method: 'GET', url: '/dual' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { via: 'http' })
  const ws = await openWs(t, port, '/dual')
  t.equal((await ws.nextFrame()).payload.toString(), 'via ws')
})

t.test('app.route({ method, url, websocket: true, handler })', async (t) => {
  const { app } = await buildApp()
  app.route({
    method: 'GET',
    url: '/routed/:id',
    websocket: true,
    handler: ((socket: WebSocket, request: { params: { id: string } }) => { socket.send('id=' + request.params.id) }) as never
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const ws = await openWs(t, port, '/routed/7')
  t.equal((await ws.nextFrame()).payload.toString(), 'id=7')
})

t.test('`this` in the handler is the encapsulated instance', async (t) => {
  const { app } = await buildApp()
  let seen: FastifyInstance | null = null
  let child: FastifyInstance | null = null
  await app.register(async (instance) => {
    child = instance
    instance.decorate('answer', 42)
    instance.get('/this', { websocket: true }, function (socket) {
      seen = this // eslint-disable-line @typescript-eslint/no-this-alias
      socket.send(String((this as unknown as { answer: number }).answer))
    })
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const ws = await openWs(t, port, '/this')
  t.equal((await ws.nextFrame()).payload.toString(), '42')
  t.equal(seen, child, 'the child context')
  t.not(seen, app)
  t.equal(app.hasDecorator('answer'), false, 'the decorator stayed encapsulated')
})

t.test('a sync throw or an async rejection in the handler closes with 1011 and is logged', async (t) => {
  const { app, logs } = await buildApp()
  app.get('/throws', { websocket: true }, () => { throw new Error('sync boom') })
  app.get('/rejects', { websocket: true }, async (socket) => {
    await new Promise((resolve) => setImmediate(resolve))
    socket.send('before')
    throw new Error('async boom')
  })
  const port = await listen(app)
  t.teardown(() => app.close())

  const a = await openWs(t, port, '/throws')
  const closeA = await a.nextFrame()
  t.equal(closeA.opcode, 0x8)
  t.equal(parseClose(closeA.payload).code, 1011)

  const b = await openWs(t, port, '/rejects')
  t.equal((await b.nextFrame()).payload.toString(), 'before')
  const closeB = await b.nextFrame()
  t.equal(closeB.opcode, 0x8)
  t.equal(parseClose(closeB.payload).code, 1011)
  // Complete the closing handshakes.
  a.write(closeFrame(1011))
  b.write(closeFrame(1011))

  const sync = logs.find('handler threw', 50)
  t.equal(sync.length, 1, 'sync throw logged once at error level')
  t.match(sync[0], { err: { message: 'sync boom' } })
  t.ok(sync[0]!.reqId !== undefined, 'logged through request.log (carries reqId)')
  const async = logs.find('handler rejected', 50)
  t.equal(async.length, 1)
  t.match(async[0], { err: { message: 'async boom' } })
  t.ok(async[0]!.reqId !== undefined)

  // The process and the server keep running.
  const res = await app.inject({ method: 'GET', url: '/throws' })
  t.equal(res.statusCode, 426)
})

t.test('bytes in the same packet as the handshake are delivered', async (t) => {
  const { app } = await buildApp()
  app.get('/echo', { websocket: true }, (socket) => {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const early = Buffer.concat([
    frame(0x1, 'first'),
    frame(0x2, Buffer.from([1, 2, 3]))
  ])
  const ws = await RawWs.connect(port, '/echo', { head: early, passive: true })
  t.teardown(() => ws.destroy())
  t.equal(ws.status, 101)
  const one = await ws.nextFrame()
  t.equal(one.opcode, 0x1)
  t.equal(one.payload.toString(), 'first')
  const two = await ws.nextFrame()
  t.equal(two.opcode, 0x2)
  t.same([...two.payload], [1, 2, 3])
})

t.test('a handler that listens late still gets the early messages', async (t) => {
  const { app } = await buildApp()
  app.get('/late', { websocket: true }, async (socket) => {
    await new Promise((resolve) => setTimeout(resolve, 50))
    socket.on('message', (data) => socket.send('late:' + data.toString()))
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const ws = await RawWs.connect(port, '/late', { head: frame(0x1, 'early'), passive: true })
  t.teardown(() => ws.destroy())
  t.equal((await ws.nextFrame()).payload.toString(), 'late:early')
})

t.test('route options override plugin options', async (t) => {
  const { app } = await buildApp({ ports: [1], protocols: ['plugin-proto'], origins: 'https://plugin.example', maxPayload: 8 })
  app.get('/default', { websocket: true }, () => {})
  app.get('/override', {
    websocket: { ports: 'any', protocols: ['route-proto'], origins: 'https://route.example', maxPayload: 1024 }
  }, (socket) => {
    socket.on('message', (data) => socket.send('got ' + data.length))
  })
  app.get('/small', { websocket: { ports: 'any' } }, (socket) => {
    socket.on('message', (data) => socket.send('got ' + data.length))
  })
  const port = await listen(app)
  t.teardown(() => app.close())

  const refused = await rawHttp(port, handshake('/default', port))
  t.equal(refused.status, 403, 'plugin ports [1] refuse this port')
  t.match(JSON.parse(refused.body), { message: /port/ })

  const wrongOrigin = await rawHttp(port, handshake('/override', port, { Origin: 'https://plugin.example' }))
  t.equal(wrongOrigin.status, 403, 'the route origins replace the plugin origins')

  const ws = await openWs(t, port, '/override', {
    Origin: 'https://route.example', 'Sec-WebSocket-Protocol': 'plugin-proto, route-proto'
  })
  t.equal(ws.responseHeaders['sec-websocket-protocol'], 'route-proto', 'the route protocols replace the plugin protocols')
  ws.write(frame(0x2, Buffer.alloc(100)))
  t.equal((await ws.nextFrame()).payload.toString(), 'got 100', 'route maxPayload 1024 allows 100 bytes')

  const small = await openWs(t, port, '/small', { Origin: 'https://plugin.example', 'Sec-WebSocket-Protocol': 'plugin-proto' })
  t.equal(small.responseHeaders['sec-websocket-protocol'], 'plugin-proto', 'inherits the plugin protocols')
  small.write(frame(0x2, Buffer.alloc(100)))
  const close = await small.nextFrame()
  t.equal(close.opcode, 0x8)
  t.equal(parseClose(close.payload).code, 1009, 'inherits the plugin maxPayload (8)')
})

t.test('invalid plugin options throw FST_WS_INVALID_OPTION naming the option', async (t) => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ maxPayload: '1mb' }, 'maxPayload'],
    [{ maxPayload: -1 }, 'maxPayload'],
    [{ ports: 'all' }, 'ports'],
    [{ ports: [] }, 'ports'],
    [{ ports: [70000] }, 'ports'],
    [{ origins: 42 }, 'origins'],
    [{ origins: 'not an origin' }, 'origins'],
    [{ requireOrigin: 'yes' }, 'requireOrigin'],
    [{ protocols: ['has space'] }, 'protocols'],
    [{ protocols: 'chat' }, 'protocols'],
    [{ protocols: ['a', 'a'] }, 'protocols'],
    [{ closeTimeout: 1.5 }, 'closeTimeout'],
    [{ heartbeat: { interval: 10 } }, 'heartbeat.timeout'],
    [{ heartbeat: true }, 'heartbeat'],
    [{ maxConnections: 0 }, 'maxConnections'],
    [{ perMessageDeflate: 'yes' }, 'perMessageDeflate'],
    [{ topics: {} }, 'topics'],
    [{ selectProtocol: () => '' }, 'selectProtocol'],
    [{ maxPayloda: 1 }, 'maxPayloda'],
    [{ sendHighWaterMark: 100, maxBufferedAmount: 10 }, 'maxBufferedAmount']
  ]
  for (const [options, name] of cases) {
    const app = Fastify()
    const err = await app.register(websocket, options as never).ready().then(() => null, (e: unknown) => e as Error & { code?: string })
    t.ok(err !== null, `${JSON.stringify(options)} is refused`)
    t.equal(err?.code, 'FST_WS_INVALID_OPTION', `${name}: code`)
    t.match(err?.message, `"${name}"`, `${name}: the message names the option`)
    t.ok(err instanceof TypeError, 'a TypeError')
    await app.close()
  }
  const ok = Fastify()
  await ok.register(websocket, { ports: 'any', maxConnections: Infinity, heartbeat: false })
  await t.resolves(async () => { await ok.ready() }, 'valid options load')
  await ok.close()
})

t.test('invalid route options throw FST_WS_INVALID_OPTION naming websocket.<option>', async (t) => {
  const cases: Array<[unknown, string]> = [
    [{ maxPayload: 'big' }, 'websocket.maxPayload'],
    [{ ports: 'all' }, 'websocket.ports'],
    [{ origins: ['https://ok.example', 3] }, 'websocket.origins'],
    [{ selectProtocol: 'chat' }, 'websocket.selectProtocol'],
    [{ protocolRequired: 1 }, 'websocket.protocolRequired'],
    [{ topics: { } }, 'websocket.topics'],
    ['yes', 'websocket']
  ]
  for (const [opts, name] of cases) {
    const app = Fastify()
    await app.register(websocket, { ports: 'any' })
    let err: (Error & { code?: string }) | null = null
    try {
      app.get('/bad', { websocket: opts as never }, () => {})
      await app.ready()
    } catch (e) {
      err = e as Error & { code?: string }
    }
    t.equal(err?.code, 'FST_WS_INVALID_OPTION', `${name}: code`)
    t.match(err?.message, `"${name}"`, `${name}: named`)
    await app.close().catch(() => {})
  }
  const app = Fastify()
  await app.register(websocket, { ports: 'any' })
  let err: (Error & { code?: string }) | null = null
  try {
    app.route({ method: 'GET', url: '/x', handler: async () => 'x', wsHandler: 'nope' as never })
    await app.ready()
  } catch (e) {
    err = e as Error & { code?: string }
  }
  t.equal(err?.code, 'FST_WS_INVALID_ROUTE', 'a wsHandler that is not a function')
  await app.close().catch(() => {})
})

t.test('the server keeps serving after a burst of refused and failed upgrades', async (t) => {
  const { app } = await buildApp()
  app.get('/ok', { websocket: true }, (socket) => { socket.send('alive') })
  app.get('/boom', { websocket: true }, () => { throw new Error('boom') })
  const port = await listen(app)
  t.teardown(() => app.close())
  await Promise.all(Array.from({ length: 10 }, (_, i) => i % 2 === 0
    ? rawHttp(port, handshake('/missing', port))
    : RawWs.connect(port, '/boom', { passive: true }).then((ws) => ws.destroy())))
  const ws = await openWs(t, port, '/ok')
  t.equal((await within(ws.nextFrame(), 2000, 'alive')).payload.toString(), 'alive')
})
