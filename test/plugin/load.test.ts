// Load: many idle connections held and released (heap and handles back to baseline), many clients echoing
// sequence-numbered messages (nothing lost, duplicated or reordered), and app.close() under load.
// CI sizes are small enough for a 2-core machine shared with other suites; scripts/soak.js raises them through
// FST_WS_LOAD_CONNECTIONS, FST_WS_ECHO_CLIENTS, FST_WS_ECHO_MESSAGES and FST_WS_CLOSE_CLIENTS.
import t from 'tap'
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import {
  buildApp, listen, RawWs, frame, envInt, settledMemory, handleCounts, waitFor, within, guardUnhandled, delay, mib, MiB
} from '../helpers/index.js'

const IDLE = envInt('FST_WS_LOAD_CONNECTIONS', 2000)
const ECHO_CLIENTS = envInt('FST_WS_ECHO_CLIENTS', 200)
const ECHO_MESSAGES = envInt('FST_WS_ECHO_MESSAGES', 1000)
const CLOSE_CLIENTS = envInt('FST_WS_CLOSE_CLIENTS', 1000)

function message (child: ChildProcess, event: string, ms: number): Promise<Record<string, number>> {
  return within(new Promise((resolve, reject) => {
    const onMessage = (m: { event: string } & Record<string, number>): void => {
      if (m.event !== event) return
      child.removeListener('message', onMessage)
      resolve(m)
    }
    child.on('message', onMessage)
    child.once('exit', (code) => reject(new Error(`client process exited (${code}) before '${event}'`)))
  }), ms, `client process: ${event}`)
}

t.test(`${IDLE} concurrent idle connections (clients in a child process), then closed: heap and handles return to baseline (heap growth < 8 MiB)`, async (t) => {
  const { app } = await buildApp({ closeTimeout: 2000 }, {}, 'warn')
  let opened = 0
  let closed = 0
  app.get('/idle', { websocket: true }, (socket) => {
    opened++
    socket.on('close', () => { closed++ })
  })
  const guard = guardUnhandled()
  t.teardown(async () => {
    guard.stop()
    await app.close()
  })
  const port = await listen(app)
  // Warm up code paths (and lazily created state) before the baseline.
  const warm = await RawWs.connect(port, '/idle')
  warm.close()
  await warm.closed()
  await waitFor(() => closed === 1, 2000, 'warm-up close')
  const base = await settledMemory()
  const baseHandles = handleCounts()

  const child = fork(fileURLToPath(new URL('../helpers/idle-clients.js', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] })
  t.teardown(() => { if (child.exitCode === null) child.kill() })
  const openTimeout = Math.max(20_000, IDLE * 10)
  child.send({ cmd: 'open', port, count: IDLE, batch: 200 })
  const result = await message(child, 'opened', openTimeout)
  t.equal(result.failed, 0, 'every handshake succeeded')
  t.equal(result.open, IDLE, `${IDLE} connections open`)
  await waitFor(() => app.websocketServer.clients.size === IDLE, 5000, 'the server to hold every socket')
  const held = await settledMemory()
  const perConnection = (held.heapUsed - base.heapUsed) / IDLE
  t.comment(`holding ${IDLE}: heap +${mib(held.heapUsed - base.heapUsed)} (${(perConnection / 1024).toFixed(1)} KiB per connection), ` +
    `RSS +${mib(held.rss - base.rss)}, TCP handles ${handleCounts().TCPSocketWrap ?? 0}`)
  t.ok(perConnection < 64 * 1024, `an idle connection costs ${(perConnection / 1024).toFixed(1)} KiB of heap (< 64 KiB)`)

  child.send({ cmd: 'close' })
  await message(child, 'closed', openTimeout)
  await waitFor(() => app.websocketServer.clients.size === 0 && closed === IDLE + 1, 10_000, 'every server socket to close')
  await within(new Promise((resolve) => child.exitCode !== null ? resolve(undefined) : child.once('exit', resolve)), 5000, 'client process exit')
  await delay(50)
  const after = await settledMemory()
  const afterHandles = handleCounts()
  t.comment(`after closing: heap ${mib(after.heapUsed - base.heapUsed)} over baseline, RSS ${mib(after.rss - base.rss)}, ` +
    `handles ${JSON.stringify(afterHandles)} (baseline ${JSON.stringify(baseHandles)})`)
  t.equal(opened, IDLE + 1, 'every connection reached the handler')
  t.ok(after.heapUsed - base.heapUsed < 8 * MiB, `heap back to baseline (+${mib(after.heapUsed - base.heapUsed)} < 8 MiB)`)
  t.equal(afterHandles.TCPSocketWrap ?? 0, baseHandles.TCPSocketWrap ?? 0, 'TCP handles back to baseline')
  t.ok((afterHandles.Timeout ?? 0) <= (baseHandles.Timeout ?? 0) + 2, 'no leftover timers')
  t.same(guard.errors, [], 'no unhandled errors')
})

t.test(`${ECHO_CLIENTS} clients each send ${ECHO_MESSAGES} sequence-numbered messages: every one echoed once, in order`, async (t) => {
  const { app } = await buildApp({}, {}, 'warn')
  let serverMessages = 0
  app.get('/echo', { websocket: true }, (socket) => {
    socket.on('message', (data, isBinary) => {
      serverMessages++
      socket.send(data, { binary: isBinary })
    })
  })
  const guard = guardUnhandled()
  t.teardown(async () => {
    guard.stop()
    await app.close()
  })
  const port = await listen(app)
  const clients = await Promise.all(Array.from({ length: ECHO_CLIENTS }, () => RawWs.connect(port, '/echo', { keepMessages: false })))
  const problems: string[] = []
  const received = new Array<number>(ECHO_CLIENTS).fill(0)
  const done = clients.map((ws, c) => new Promise<void>((resolve) => {
    ws.on('message', (payload: Buffer, opcode: number) => {
      const seq = received[c]!
      const expected = body(c, seq)
      const isBinary = seq % 3 === 0
      if (opcode !== (isBinary ? 0x2 : 0x1) || !payload.equals(expected)) {
        if (problems.length < 10) problems.push(`client ${c}: message ${seq} came back as ${payload.subarray(0, 40).toString()} (opcode ${opcode})`)
      }
      received[c] = seq + 1
      if (received[c] === ECHO_MESSAGES) resolve()
    })
  }))
  // Each client sends in bursts of 50 frames written together, so frames straddle TCP reads.
  await Promise.all(clients.map(async (ws, c) => {
    for (let seq = 0; seq < ECHO_MESSAGES; seq += 50) {
      const frames: Buffer[] = []
      for (let k = seq; k < Math.min(seq + 50, ECHO_MESSAGES); k++) frames.push(frameFor(k % 3 === 0 ? 0x2 : 0x1, body(c, k)))
      if (!ws.write(Buffer.concat(frames))) await new Promise((resolve) => ws.socket.once('drain', resolve))
      await new Promise((resolve) => setImmediate(resolve))
    }
  }))
  await within(Promise.all(done), 60_000, 'every echo')
  t.same(problems, [], 'every message came back intact and in order')
  t.equal(received.reduce((a, b) => a + b, 0), ECHO_CLIENTS * ECHO_MESSAGES, 'none lost')
  await delay(50)
  t.equal(received.reduce((a, b) => a + b, 0), ECHO_CLIENTS * ECHO_MESSAGES, 'none duplicated')
  t.equal(serverMessages, ECHO_CLIENTS * ECHO_MESSAGES, 'the server saw each message once')
  for (const ws of clients) ws.close()
  await Promise.all(clients.map((ws) => ws.closed()))
  t.same(guard.errors, [], 'no unhandled errors')
})

function body (client: number, seq: number): Buffer {
  const head = `${client}:${seq}:`
  // Every 97th message is larger (a 16-bit length); the rest are small.
  return Buffer.from(seq % 97 === 0 ? head + 'x'.repeat(1000) : head)
}

const LOAD_MASK = Buffer.from([0x12, 0x34, 0x56, 0x78])

function frameFor (opcode: number, payload: Buffer): Buffer {
  return frame(opcode, payload, { mask: LOAD_MASK })
}

t.test(`app.close() while ${CLOSE_CLIENTS} clients are sending: all get Close 1001, shutdown within closeTimeout + 3 s`, async (t) => {
  const closeTimeout = 1500
  const { app } = await buildApp({ closeTimeout }, {}, 'warn')
  const serverCloses: number[] = []
  app.get('/echo', { websocket: true }, (socket) => {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    socket.on('close', (code) => serverCloses.push(code))
  })
  const guard = guardUnhandled()
  t.teardown(() => guard.stop())
  const port = await listen(app)
  const deaf = Math.min(10, Math.floor(CLOSE_CLIENTS / 10))
  const clients: RawWs[] = []
  for (let i = 0; i < CLOSE_CLIENTS; i += 100) {
    const n = Math.min(100, CLOSE_CLIENTS - i)
    clients.push(...await Promise.all(Array.from({ length: n }, (_, k) =>
      RawWs.connect(port, '/echo', { keepMessages: false, answerClose: i + k >= deaf }))))
  }
  // Every client keeps one message in flight: each echo triggers the next send, until the server's Close.
  const echoes = new Array<number>(CLOSE_CLIENTS).fill(0)
  clients.forEach((ws, i) => {
    ws.on('message', () => {
      echoes[i]!++
      if (ws.closeCode === null && !ws.socket.destroyed) ws.send(`m${echoes[i]}`)
    })
    ws.send('m0')
  })
  await waitFor(() => echoes.every((n) => n > 0), 20_000, 'every client to be sending')
  const started = Date.now()
  await within(app.close(), closeTimeout + 3000, 'app.close()')
  const elapsed = Date.now() - started
  t.comment(`app.close() took ${elapsed} ms with ${CLOSE_CLIENTS} busy clients (${deaf} never answer the Close)`)
  await Promise.all(clients.map((ws) => ws.closed(5000)))
  const codes = new Map<number | null, number>()
  for (const ws of clients) codes.set(ws.closeCode, (codes.get(ws.closeCode) ?? 0) + 1)
  t.same([...codes], [[1001, CLOSE_CLIENTS]], 'every client received Close 1001')
  t.equal(serverCloses.length, CLOSE_CLIENTS, 'every server socket closed once')
  t.equal(serverCloses.filter((c) => c === 1001).length, CLOSE_CLIENTS - deaf, 'those that answered: 1001')
  t.equal(serverCloses.filter((c) => c === 1006).length, deaf, 'those that never answered: destroyed after closeTimeout, 1006')
  t.equal(app.websocketServer.clients.size, 0)
  t.same(guard.errors, [], 'no unhandled errors')
})
