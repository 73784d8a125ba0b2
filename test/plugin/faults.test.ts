// Faults: peers that vanish at every stage, heartbeats, slow consumers, throwing user code and connection
// limits. Nothing may produce an unhandled error; each server socket's 'close' fires exactly once.
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import WsClient from 'ws'
import type { FastifyInstance } from 'fastify'
import type { WebSocket, WebSocketPluginOptions } from '../../lib/index.js'
import {
  buildApp, listen, RawWs, frame, handshake, rawHttp, delay, waitFor, within, guardUnhandled, settledMemory,
  PeakSampler, mib, MiB, type LogCapture
} from '../helpers/index.js'

interface Tracked {
  socket: WebSocket
  closes: Array<[number, string]>
  errors: string[]
}

interface Server {
  app: FastifyInstance
  port: number
  logs: LogCapture
  tracked: Tracked[]
}

/** An app whose sockets are all tracked; `setup` registers routes (the default: /ws, an echo). */
async function server (t: Test, options: WebSocketPluginOptions = {}, setup?: (app: FastifyInstance, track: (s: WebSocket) => Tracked) => void): Promise<Server> {
  const { app, logs } = await buildApp(options)
  const tracked: Tracked[] = []
  const track = (socket: WebSocket): Tracked => {
    const entry: Tracked = { socket, closes: [], errors: [] }
    socket.on('close', (code, reason) => entry.closes.push([code, reason]))
    socket.on('error', (err) => entry.errors.push(err.code))
    tracked.push(entry)
    return entry
  }
  if (setup !== undefined) setup(app, track)
  else {
    app.get('/ws', { websocket: true }, (socket) => {
      track(socket)
      socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    })
  }
  const guard = guardUnhandled()
  t.teardown(async () => {
    await app.close()
    guard.stop()
    if (guard.errors.length > 0) throw new Error(`unhandled errors: ${guard.errors.map(String).join('; ')}`)
  })
  return { app, port: await listen(app), logs, tracked }
}

/** Every tracked socket closed exactly once, with `code`; waits (bounded) for the closes, then a little longer for duplicates. */
async function assertClosedOnce (t: Test, tracked: Tracked[], code: number, what: string): Promise<void> {
  await waitFor(() => tracked.every((e) => e.closes.length > 0), 3000, `${what}: server close events`)
  await delay(50)
  for (const [i, e] of tracked.entries()) {
    t.equal(e.closes.length, 1, `${what} #${i}: 'close' fired exactly once`)
    t.equal(e.closes[0]?.[0], code, `${what} #${i}: code ${code}`)
    t.equal(e.socket.readyState, 3, `${what} #${i}: CLOSED`)
  }
}

async function stillServing (t: Test, port: number): Promise<void> {
  const ws = await RawWs.connect(port, '/ws')
  ws.send('ping?')
  t.equal((await ws.nextMessage()).payload.toString(), 'ping?', 'the server still serves')
  ws.close()
  await ws.closed()
}

/** A route behind an async onRequest hook (100 ms), plus the echo route. */
async function slowHookServer (t: Test): Promise<Server & { hook: { started: number, done: number } }> {
  const hook = { started: 0, done: 0 }
  const s = await server(t, { closeTimeout: 500 }, (app, track) => {
    app.get('/slow', {
      websocket: true,
      onRequest: async () => {
        hook.started++
        await delay(100)
        hook.done++
      }
    }, (socket) => { track(socket) })
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    })
  })
  return { ...s, hook }
}

/** Send a handshake to /slow and act on the socket after `ms` (while the hook runs). */
function vanish (port: number, act: (socket: Socket) => void, ms: number): Socket {
  const socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  socket.write(handshake('/slow', port))
  setTimeout(() => act(socket), ms)
  return socket
}

t.test('peers that reset (RST) while an async onRequest hook runs: no unhandled error, close once with 1006, still serving', async (t) => {
  const s = await slowHookServer(t)
  vanish(s.port, (socket) => socket.resetAndDestroy(), 20)
  vanish(s.port, (socket) => socket.resetAndDestroy(), 90)
  vanish(s.port, (socket) => socket.resetAndDestroy(), 0)
  await waitFor(() => s.hook.started === 3 && s.hook.done === 3, 3000, 'every hook to finish')
  await delay(50)
  t.comment(`${s.tracked.length} of 3 reset peers reached the handler`)
  if (s.tracked.length > 0) await assertClosedOnce(t, s.tracked, 1006, 'reset mid-handshake')
  await stillServing(t, s.port)
})

t.test('peers that close (FIN) while an async onRequest hook runs: their server socket closes too, with 1006',
  async (t) => {
    const s = await slowHookServer(t)
    vanish(s.port, (socket) => socket.end(), 20) // half-close
    vanish(s.port, (socket) => socket.destroy(), 20) // FIN, then gone
    await waitFor(() => s.hook.started === 2 && s.hook.done === 2, 3000, 'every hook to finish')
    await delay(50)
    t.comment(`${s.tracked.length} of 2 peers reached the handler; readyState ${s.tracked.map((e) => e.socket.readyState).join(', ')}`)
    try {
      await waitFor(() => s.tracked.every((e) => e.closes.length > 0), 2000, 'server close events')
    } catch (err) {
      t.fail((err as Error).message)
    }
    for (const e of s.tracked) {
      t.equal(e.closes.length, 1, '\'close\' fired exactly once')
      t.equal(e.closes[0]?.[0], 1006, 'code 1006')
    }
    t.equal(s.app.websocketServer.clients.size, 0, 'no zombie sockets held (they count against maxConnections)')
    await stillServing(t, s.port)
  })

t.test('peers that vanish mid-frame or with a TCP reset: \'close\' fires once with 1006', async (t) => {
  const s = await server(t)
  const big = frame(0x2, Buffer.alloc(100_000, 1))
  const cases: Array<[string, (ws: RawWs) => void]> = [
    ['mid-header, destroy', (ws) => { ws.write(big.subarray(0, 3)); ws.destroy() }],
    ['mid-payload, destroy', (ws) => { ws.write(big.subarray(0, 50_000)); setTimeout(() => ws.destroy(), 20) }],
    ['mid-payload, reset', (ws) => { ws.write(big.subarray(0, 50_000)); setTimeout(() => ws.socket.resetAndDestroy(), 20) }],
    ['between frames, reset', (ws) => { ws.send('x'); setTimeout(() => ws.socket.resetAndDestroy(), 20) }],
    ['half-close mid-frame', (ws) => { ws.write(big.subarray(0, 10)); ws.socket.end() }],
    ['reset right after the handshake', (ws) => { ws.socket.resetAndDestroy() }]
  ]
  for (const [what, act] of cases) {
    const before = s.tracked.length
    const ws = await RawWs.connect(s.port, '/ws')
    await waitFor(() => s.tracked.length === before + 1, 2000, 'handler')
    act(ws)
    await assertClosedOnce(t, s.tracked.slice(before), 1006, what)
  }
  await stillServing(t, s.port)
})

t.test('a peer that vanishes while the server sends a big message: close once with 1006, the send callback reports it', async (t) => {
  const results: Array<Error | null | undefined> = []
  // 48 MiB: more than loopback's socket buffers hold (a few MiB), under maxBufferedAmount.
  const s = await server(t, { maxBufferedAmount: 64 * MiB }, (app, track) => {
    app.get('/big', { websocket: true }, (socket) => {
      track(socket)
      socket.send(Buffer.alloc(48 * MiB, 7), (err) => results.push(err))
    })
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    })
  })
  for (const how of ['destroy', 'reset'] as const) {
    const before = s.tracked.length
    const ws = await RawWs.connect(s.port, '/big', { keepMessages: false })
    await within(new Promise((resolve) => ws.socket.once('data', resolve)), 3000, 'the first bytes of the big message')
    if (how === 'destroy') ws.destroy()
    else ws.socket.resetAndDestroy()
    await assertClosedOnce(t, s.tracked.slice(before), 1006, `vanished mid-send (${how})`)
  }
  await waitFor(() => results.length === 2, 3000, 'send callbacks')
  t.comment(`send callbacks: ${results.map((e) => e === undefined || e === null ? 'success' : e.message).join('; ')}`)
  t.ok(results.every((e) => e instanceof Error), 'each send callback got an error')
  await stillServing(t, s.port)
})

t.test('a reset during the closing handshake: close fires once', async (t) => {
  const s = await server(t, {}, (app, track) => {
    app.get('/ws', { websocket: true }, (socket) => {
      track(socket)
      socket.close(4000, 'bye')
    })
  })
  const ws = await RawWs.connect(s.port, '/ws', { answerClose: false })
  if (ws.closeCode === null) await within(new Promise((resolve) => ws.once('closeframe', resolve)), 2000, 'the server Close')
  t.equal(ws.closeCode, 4000)
  ws.socket.resetAndDestroy()
  await waitFor(() => s.tracked[0]!.closes.length > 0, 3000, 'server close')
  await delay(50)
  t.equal(s.tracked[0]!.closes.length, 1, 'once')
  t.equal(s.tracked[0]!.closes[0]![0], 1006, 'no Close came back: 1006')
})

t.test('heartbeat terminates a peer that never answers and keeps one that does', async (t) => {
  const s = await server(t, { heartbeat: { interval: 100, timeout: 100 } }, (app, track) => {
    app.get('/ws', { websocket: true }, (socket) => {
      const e = track(socket)
      let pongs = 0
      socket.on('pong', () => { pongs++ })
      ;(e as Tracked & { pongs: () => number }).pongs = () => pongs
    })
  })
  // A raw peer that completes the handshake, then never reads and never answers.
  const deaf = await RawWs.connect(s.port, '/ws', { answerPing: false })
  deaf.socket.pause()
  // A ws client: answers pings automatically.
  const alive = new WsClient(`ws://127.0.0.1:${s.port}/ws`)
  await within(new Promise((resolve, reject) => { alive.once('open', resolve); alive.once('error', reject) }), 2000, 'ws client open')
  let aliveClosed = false
  alive.on('close', () => { aliveClosed = true })
  // A raw peer that reads and answers.
  const polite = await RawWs.connect(s.port, '/ws')
  await waitFor(() => s.tracked.length === 3, 2000, 'three handlers')
  const [deafEntry, aliveEntry, politeEntry] = s.tracked as [Tracked, Tracked, Tracked]
  await waitFor(() => deafEntry.closes.length === 1, 3000, 'the deaf peer to be terminated')
  deaf.destroy()
  t.same(deafEntry.errors, ['FST_WS_HEARTBEAT_TIMEOUT'], 'error event: FST_WS_HEARTBEAT_TIMEOUT')
  t.equal(deafEntry.closes[0]![0], 1006, 'terminated: 1006')
  await delay(500) // several more intervals
  t.equal(aliveClosed, false, 'the ws client that answers pings stays open')
  t.equal(polite.tcpClosed, false, 'the raw client that answers pings stays open')
  t.equal(aliveEntry.socket.readyState, 1)
  t.equal(politeEntry.socket.readyState, 1)
  t.ok((aliveEntry as Tracked & { pongs: () => number }).pongs() >= 2, 'the ws client answered at least two pings')
  alive.close()
  polite.close()
  await polite.closed()
})

t.test('a slow consumer (echo, 64 MiB sent in 64 KiB messages, never read): bounded buffering, paused reading, 1008 after drainTimeout (RSS growth < 64 MiB)', async (t) => {
  const maxBufferedAmount = MiB
  let maxBuffered = 0
  let pausedSeen = false
  let received = 0
  const s = await server(t, { sendHighWaterMark: 256 * 1024, maxBufferedAmount, drainTimeout: 500, closeTimeout: 500 }, (app, track) => {
    app.get('/ws', { websocket: true }, (socket) => {
      track(socket)
      socket.on('message', (data) => {
        received += data.length
        const ok = socket.send(data)
        maxBuffered = Math.max(maxBuffered, socket.bufferedAmount)
        if (!ok && (socket.rawSocket as Socket).isPaused()) pausedSeen = true
      })
    })
  })
  const base = await settledMemory()
  const peak = new PeakSampler(10)
  const ws = await RawWs.connect(s.port, '/ws', { keepMessages: false })
  ws.socket.pause() // never read
  const message = frame(0x2, Buffer.alloc(64 * 1024, 9))
  let sent = 0
  await within((async () => {
    while (sent < 1024 && !ws.tcpClosed) {
      if (!ws.write(message)) await Promise.race([new Promise((resolve) => ws.socket.once('drain', resolve)), ws.closed(10_000)])
      sent++
    }
  })(), 10_000, 'the server to stop the client (it cannot send everything)').catch(() => {})
  await waitFor(() => s.tracked[0]?.closes.length === 1, 5000, 'server close')
  peak.stop()
  ws.destroy()
  const e = s.tracked[0]!
  t.comment(`client queued ${sent} of 1024 messages; server received ${mib(received)}; bufferedAmount peaked at ${mib(maxBuffered)}; ` +
    `RSS growth ${mib(peak.peakRss - base.rss)}, arrayBuffers growth ${mib(peak.peakArrayBuffers - base.arrayBuffers)}`)
  t.ok(maxBuffered <= maxBufferedAmount, `bufferedAmount stayed <= maxBufferedAmount (${mib(maxBuffered)})`)
  t.ok(pausedSeen, 'reading from the peer was paused')
  t.ok(received < 64 * MiB, 'the server did not read everything the client tried to send')
  t.same(e.errors, ['FST_WS_SLOW_CONSUMER'], 'error event: FST_WS_SLOW_CONSUMER')
  t.equal(e.closes[0]![0], 1008, 'closed with 1008')
  t.ok(peak.peakRss - base.rss < 64 * MiB, `RSS growth ${mib(peak.peakRss - base.rss)} < 64 MiB`)
})

t.test('a handler that floods a peer that does not read is closed with 1008 at maxBufferedAmount (no drainTimeout)', async (t) => {
  const maxBufferedAmount = MiB
  let maxBuffered = 0
  let attempts = 0
  const s = await server(t, { sendHighWaterMark: 256 * 1024, maxBufferedAmount, drainTimeout: 0, closeTimeout: 500 }, (app, track) => {
    app.get('/ws', { websocket: true }, (socket) => {
      track(socket)
      const chunk = Buffer.alloc(64 * 1024, 3)
      const pump = (): void => {
        for (let i = 0; i < 16 && socket.readyState === 1; i++) {
          attempts++
          socket.send(chunk) // ignores backpressure on purpose
          maxBuffered = Math.max(maxBuffered, socket.bufferedAmount)
        }
        if (socket.readyState === 1 && attempts < 10_000) setImmediate(pump)
      }
      pump()
    })
  })
  const ws = await RawWs.connect(s.port, '/ws', { keepMessages: false })
  ws.socket.pause()
  await waitFor(() => s.tracked[0]?.closes.length === 1, 5000, 'server close')
  ws.destroy()
  const e = s.tracked[0]!
  t.comment(`${attempts} sends; bufferedAmount peaked at ${mib(maxBuffered)}`)
  t.same(e.errors, ['FST_WS_SLOW_CONSUMER'])
  t.equal(e.closes[0]![0], 1008)
  t.ok(maxBuffered <= maxBufferedAmount + 64 * 1024 + 16, `bufferedAmount ${mib(maxBuffered)} <= maxBufferedAmount + one message`)
})

t.test('errors thrown by user code close that socket with 1011, are logged, and never take the process down', async (t) => {
  const s = await server(t, {}, (app, track) => {
    app.get('/sync-throw', { websocket: true }, (socket) => {
      track(socket)
      throw new Error('boom: sync')
    })
    app.get('/async-reject', { websocket: true }, async (socket) => {
      track(socket)
      await delay(5)
      throw new Error('boom: async')
    })
    app.get('/listener-throw', { websocket: true }, (socket) => {
      track(socket)
      socket.on('message', () => { throw new Error('boom: listener') })
    })
    app.get('/iterator-throw', { websocket: true }, async (socket) => {
      track(socket)
      for await (const message of socket) {
        if (message === 'throw') throw new Error('boom: iterator')
      }
    })
    app.get('/close-listener-throw', { websocket: true }, (socket) => {
      track(socket)
      socket.on('close', () => { throw new Error('boom: close listener') })
    })
    app.get('/error-listener-throw', { websocket: true }, (socket) => {
      track(socket)
      socket.on('error', () => { throw new Error('boom: error listener') })
    })
    app.get('/ws', { websocket: true }, (socket) => {
      track(socket)
      socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    })
  })
  for (const path of ['/sync-throw', '/async-reject', '/listener-throw', '/iterator-throw']) {
    const ws = await RawWs.connect(s.port, path)
    ws.send('throw')
    await ws.closed()
    t.equal(ws.closeCode, 1011, `${path}: Close 1011`)
  }
  const errorLines = s.logs.lines.filter((l) => l.level === 50)
  for (const text of ['boom: sync', 'boom: async', 'boom: listener', 'boom: iterator']) {
    t.ok(errorLines.some((l) => JSON.stringify(l).includes(text)), `logged at error level: ${text}`)
  }
  const c = await RawWs.connect(s.port, '/close-listener-throw')
  c.close(1000)
  await c.closed()
  const e = await RawWs.connect(s.port, '/error-listener-throw')
  e.write(frame(0x1, 'unmasked', { mask: false }))
  await e.closed()
  t.equal(e.closeCode, 1002, 'a protocol error still closes with 1002 when the error listener throws')
  await waitFor(() => s.logs.lines.some((l) => JSON.stringify(l).includes('boom: error listener')), 2000, 'error listener log')
  t.ok(s.logs.lines.some((l) => l.level === 50 && JSON.stringify(l).includes('boom: close listener')), 'a throwing close listener is logged')
  await waitFor(() => s.tracked.every((x) => x.closes.length > 0), 2000, 'every socket closed')
  t.ok(s.tracked.every((x) => x.closes.length === 1), 'each closed exactly once')
  await stillServing(t, s.port)
})

t.test('maxConnections at plugin and route level: past it, 503 with a reason; a closed socket frees its slot', async (t) => {
  const s = await server(t, { maxConnections: 3 }, (app, track) => {
    app.get('/limited', { websocket: { maxConnections: 1 } }, (socket) => { track(socket) })
    app.get('/ws', { websocket: true }, (socket) => { track(socket) })
  })
  const first = await RawWs.connect(s.port, '/limited')
  const refused = await rawHttp(s.port, handshake('/limited', s.port), { tolerateReset: true })
  t.equal(refused.status, 503, 'route limit: 503')
  t.match(refused.body, /maxConnections/, 'with a reason naming the option')
  const a = await RawWs.connect(s.port, '/ws')
  const b = await RawWs.connect(s.port, '/ws')
  const overPlugin = await rawHttp(s.port, handshake('/ws', s.port), { tolerateReset: true })
  t.equal(overPlugin.status, 503, 'plugin limit (3 open): 503')
  t.match(overPlugin.body, /Too many WebSocket connections/)
  // Free a slot on each level.
  first.close()
  await first.closed()
  await waitFor(() => s.app.websocketServer.clients.size === 2, 2000, 'the slot to be released')
  const again = await RawWs.connect(s.port, '/limited')
  t.equal(again.status, 101, 'the route slot is free again')
  for (const ws of [a, b, again]) ws.close()
  await Promise.all([a, b, again].map((ws) => ws.closed()))
})
