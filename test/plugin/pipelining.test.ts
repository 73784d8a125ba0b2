// HTTP/1.1 pipelining: a plain request followed on the same connection by an upgrade request, sent while the
// first response is still in flight (in the same TCP packet, or a moment later). The upgrade waits for that
// response, then is routed; the 'upgrade' listener never throws, and the server keeps serving.
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import { IncomingMessage } from 'node:http'
import { duplexPair } from '../../lib/testing/duplex-pair.js'
import { buildApp, listen, handshake, delay, within, parseHead, RawWs, rawHttp, guardUnhandled } from '../helpers/index.js'

interface Parsed { status: number, headers: Record<string, string>, body: string }

interface Exchange {
  responses: Parsed[]
  /** Bytes after the last complete response (frames after a 101). */
  rest: Buffer
  socket: Socket
  /** The server closed the connection. */
  ended: boolean
}

/** Split what was received into complete responses (bodies framed by Content-Length; a 101 ends the HTTP part). */
function split (data: Buffer): { responses: Parsed[], rest: Buffer, upgraded: boolean } {
  const responses: Parsed[] = []
  let offset = 0
  for (;;) {
    const text = data.subarray(offset).toString('latin1')
    const head = parseHead(text)
    if (head === null) return { responses, rest: data.subarray(offset), upgraded: false }
    if (head.status === 101) {
      responses.push({ status: 101, headers: head.headers, body: '' })
      return { responses, rest: data.subarray(offset + head.bodyStart), upgraded: true }
    }
    const length = Number(head.headers['content-length'] ?? 0)
    if (text.length < head.bodyStart + length) return { responses, rest: data.subarray(offset), upgraded: false }
    responses.push({ status: head.status, headers: head.headers, body: text.slice(head.bodyStart, head.bodyStart + length) })
    offset += head.bodyStart + length
  }
}

/**
 * Send `first`, then (after `gap` ms, or in the same write when gap is 0) `second` on one connection; resolve once
 * `expected` responses arrived and either a 101 came or the server closed the connection.
 */
function pipeline (t: Test, port: number, first: string, second: string | Buffer, gap: number, expected: number): Promise<Exchange> {
  const socket = connect({ host: '127.0.0.1', port })
  t.teardown(() => socket.destroy())
  socket.on('error', () => {})
  return within(new Promise<Exchange>((resolve) => {
    let data = Buffer.alloc(0)
    let ended = false
    const check = (): void => {
      const { responses, rest, upgraded } = split(data)
      if (responses.length >= expected && (upgraded || ended)) {
        socket.removeListener('data', onData)
        socket.pause()
        resolve({ responses, rest, socket, ended })
      }
    }
    const onData = (c: Buffer): void => {
      data = Buffer.concat([data, c])
      check()
    }
    socket.on('data', onData)
    socket.on('end', () => { ended = true; check() })
    socket.on('close', () => { ended = true; check() })
    if (gap === 0) socket.write(Buffer.concat([Buffer.from(first), Buffer.from(second)]))
    else {
      socket.write(first)
      setTimeout(() => { if (!socket.destroyed) socket.write(second) }, gap)
    }
  }), 2000, `pipelined exchange (${expected} responses)`)
}

function get (path: string, port: number, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${extra}\r\n`
}

async function buildPipelineApp (withWebSocket: boolean) {
  const built = await buildApp()
  const { app } = built
  app.get('/slow', async () => {
    await delay(50)
    return { slow: true }
  })
  app.get('/fast', (_request, reply) => { reply.send({ fast: true }) })
  app.get('/slow-closing', async (_request, reply) => {
    await delay(50)
    reply.header('connection', 'close')
    return { slow: true }
  })
  app.get('/fast-closing', (_request, reply) => { reply.header('connection', 'close').send({ fast: true }) })
  if (withWebSocket) {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data) => socket.send('echo:' + data.toString()))
    })
  }
  return built
}

async function stillServing (t: Test, port: number, withWebSocket: boolean): Promise<void> {
  const plain = await rawHttp(port, get('/fast', port, 'Connection: close\r\n'))
  t.equal(plain.status, 200, 'a new connection still gets its HTTP response')
  if (withWebSocket) {
    const again = await pipeline(t, port, handshake('/ws', port), '', 0, 1)
    t.equal(again.responses[0]?.status, 101, 'a new connection still upgrades')
    again.socket.destroy()
  }
}

for (const withWebSocket of [true, false]) {
  const kind = withWebSocket ? 'an app with a WebSocket route' : 'an app with no WebSocket route'
  t.test(`pipelined GET then upgrade, ${kind}`, async (t) => {
    const guard = guardUnhandled()
    t.teardown(guard.stop)
    const { app } = await buildPipelineApp(withWebSocket)
    const port = await listen(app)
    t.teardown(() => app.close())

    for (const first of ['/slow', '/fast']) {
      for (const gap of [0, 10]) {
        const name = `${first}, upgrade ${gap === 0 ? 'in the same packet' : `${gap} ms later`}`
        const ex = await pipeline(t, port, get(first, port), handshake('/ws', port), gap, 2).catch((err: Error) => {
          t.fail(`${name}: ${err.message}; uncaught: ${guard.errors.map(String).join('; ')}`)
          return null
        })
        if (ex === null) continue
        t.equal(ex.responses.length, 2, `${name}: two responses`)
        t.equal(ex.responses[0]?.status, 200, `${name}: the first request is answered first`)
        t.same(JSON.parse(ex.responses[0]?.body ?? 'null'), first === '/slow' ? { slow: true } : { fast: true }, `${name}: its body`)
        if (withWebSocket) {
          t.equal(ex.responses[1]?.status, 101, `${name}: then the upgrade is accepted`)
          const ws = RawWs.over(ex.socket, ex.rest)
          ws.send('hi')
          t.equal((await ws.nextMessage()).payload.toString(), 'echo:hi', `${name}: the upgraded connection carries frames`)
        } else {
          t.equal(ex.responses[1]?.status, 404, `${name}: then the upgrade gets the router's 404`)
          t.equal(ex.ended, true, `${name}: and the connection is closed`)
        }
        ex.socket.destroy()
      }
    }
    await stillServing(t, port, withWebSocket)
    t.same(guard.errors, [], 'no uncaught exception')
  })

  t.test(`pipelined GET answered with Connection: close, then upgrade: dropped, ${kind}`, async (t) => {
    const guard = guardUnhandled()
    t.teardown(guard.stop)
    const { app } = await buildPipelineApp(withWebSocket)
    const port = await listen(app)
    t.teardown(() => app.close())
    for (const first of ['/slow-closing', '/fast-closing']) {
      for (const gap of [0, 10]) {
        const name = `${first}, upgrade ${gap === 0 ? 'in the same packet' : `${gap} ms later`}`
        const ex = await pipeline(t, port, get(first, port), handshake('/ws', port), gap, 1).catch((err: Error) => {
          t.fail(`${name}: ${err.message}; uncaught: ${guard.errors.map(String).join('; ')}`)
          return null
        })
        if (ex === null) continue
        t.same(ex.responses.map((r) => r.status), [200], `${name}: only the first request is answered`)
        t.equal(ex.responses[0]?.headers.connection, 'close')
        t.equal(ex.ended, true, `${name}: the connection is closed, no 101`)
      }
    }
    // A client that pipelines past its own Connection: close gets Node's 400 (the parser refuses the extra bytes).
    const ex = await pipeline(t, port, get('/slow', port, 'Connection: close\r\n'), handshake('/ws', port), 0, 1)
    t.notOk(ex.responses.some((r) => r.status === 101), 'a client that said Connection: close is never upgraded')
    t.equal(ex.ended, true)
    await stillServing(t, port, withWebSocket)
    t.same(guard.errors, [], 'no uncaught exception')
  })
}

t.test('several pipelined requests ahead of the upgrade are all answered, in order, before the 101', async (t) => {
  const guard = guardUnhandled()
  t.teardown(guard.stop)
  const { app } = await buildPipelineApp(true)
  const port = await listen(app)
  t.teardown(() => app.close())
  const ex = await pipeline(t, port, get('/slow', port) + get('/fast', port) + get('/slow', port), handshake('/ws', port), 0, 4).catch((err: Error) => {
    t.fail(`${err.message}; uncaught: ${guard.errors.map(String).join('; ')}`)
    return null
  })
  if (ex === null) return
  t.same(ex.responses.map((r) => r.status), [200, 200, 200, 101])
  t.same(ex.responses.slice(0, 3).map((r) => Object.keys(JSON.parse(r.body) as object)[0]), ['slow', 'fast', 'slow'])
  ex.socket.destroy()
  t.same(guard.errors, [], 'no uncaught exception')
})

t.test('a client that leaves while its pipelined upgrade waits is cleaned up', async (t) => {
  const guard = guardUnhandled()
  t.teardown(guard.stop)
  const { app } = await buildPipelineApp(true)
  const port = await listen(app)
  t.teardown(() => app.close())
  const socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  socket.write(get('/slow', port) + handshake('/ws', port))
  await delay(10)
  socket.destroy()
  await delay(100)
  t.equal(app.websocketServer.clients.size, 0, 'nothing was upgraded for it')
  await stillServing(t, port, true)
  t.same(guard.errors, [], 'no uncaught exception')
})

t.test('an app closing while a pipelined upgrade waits: no 101, the connection is closed', async (t) => {
  const guard = guardUnhandled()
  t.teardown(guard.stop)
  const { app } = await buildPipelineApp(true)
  const port = await listen(app)
  const exchange = pipeline(t, port, get('/slow', port), handshake('/ws', port), 0, 1)
  await delay(20) // the /slow handler is running, the upgrade waits behind it
  const closing = app.close()
  const ex = await exchange
  t.same(ex.responses.map((r) => r.status).filter((s) => s !== 200 && s !== 503), [], 'the first response, then a 503 or nothing')
  t.notOk(ex.responses.some((r) => r.status === 101), 'never upgraded')
  t.equal(ex.ended, true)
  await within(closing, 3000, 'app.close()')
  t.same(guard.errors, [], 'no uncaught exception')
})

t.test("a fault in one of the upgrade listener's steps destroys that connection, logged, and nothing throws", async (t) => {
  const guard = guardUnhandled()
  t.teardown(guard.stop)
  const { app, logs } = await buildPipelineApp(true)
  const port = await listen(app)
  t.teardown(() => app.close())
  // An 'upgrade' whose request the router cannot take (no url): Fastify's routing throws.
  const [client, server] = duplexPair()
  const req = new IncomingMessage(server as unknown as Socket)
  req.method = 'GET'
  req.headers = { host: 'localhost', upgrade: 'websocket', connection: 'Upgrade' }
  ;(req as { url?: string }).url = undefined
  t.doesNotThrow(() => app.server.emit('upgrade', req, server, Buffer.alloc(0)), 'the listener does not throw')
  // The in-memory client sees end of stream (as a TCP peer would), the server end is destroyed.
  await within(new Promise<void>((resolve) => { if (server.destroyed) resolve(); else server.once('close', () => resolve()) }), 1000, 'destroyed')
  client.destroy()
  t.equal(server.destroyed, true, 'that connection is destroyed')
  t.equal(logs.find('WebSocket upgrade failed', 50).length, 1, 'logged once at error')
  await stillServing(t, port, true)
  t.same(guard.errors, [], 'no uncaught exception')
})
