// The handshake's read chunk must not live as long as the socket. A handler that keeps `request` in a closure
// (as the README quick start does, logging through request.log on close) keeps the IncomingMessage alive; what
// hangs on it must not pin the bytes Node read the handshake into.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { buildApp, listen, handshake, within, frame, settledMemory } from '../helpers/index.js'

const SOCKETS = 300
const KiB = 1024

/** Open a WebSocket (sending `early` in the handshake's packet) and keep nothing received: the client must not skew the measure. */
function open (port: number, early: Buffer = Buffer.alloc(0)): Promise<Socket> {
  return within(new Promise<Socket>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    let seen = ''
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString('latin1')
      if (!seen.includes('\r\n\r\n')) return
      socket.removeListener('data', onData)
      if (seen.startsWith('HTTP/1.1 101 ')) resolve(socket)
      else reject(new Error('refused: ' + seen.slice(0, 40)))
    }
    socket.on('data', onData)
    socket.on('error', reject)
    socket.write(Buffer.concat([Buffer.from(handshake('/chat', port)), early]))
  }), 5000, 'WebSocket open')
}

for (const early of [0, 32 * KiB]) {
  const what = early === 0 ? 'nothing' : `a ${early / KiB} KiB message`
  t.test(`${SOCKETS} idle sockets whose handler keeps the request, ${what} in the handshake packet: a few KiB of buffers each`, async (t) => {
    const { app } = await buildApp({}, {}, 'warn')
    let opened = 0
    let received = 0
    app.get('/chat', { websocket: true }, (socket, request) => {
      opened++
      // The quick start's pattern: the request stays reachable for the socket's life.
      socket.on('message', () => { received++ })
      socket.on('close', (code) => request.log.info({ code }, 'bye'))
    })
    const port = await listen(app)
    const clients: Socket[] = []
    t.teardown(async () => {
      for (const c of clients) c.destroy()
      await app.close()
    })
    const payload = early === 0 ? Buffer.alloc(0) : frame(0x2, Buffer.alloc(early, 7))
    // Warm up (lazy allocations, pools), then measure.
    for (let i = 0; i < 20; i++) clients.push(await open(port, payload))
    const before = await settledMemory()
    for (let i = 0; i < SOCKETS; i++) clients.push(await open(port, payload))
    if (early > 0) await within(waitUntil(() => received === SOCKETS + 20), 5000, 'every early message delivered')
    const after = await settledMemory()
    t.equal(opened, SOCKETS + 20, 'every socket reached its handler')
    const perSocket = (after.arrayBuffers - before.arrayBuffers) / SOCKETS
    t.comment(`arrayBuffers per idle socket, ${what} in the handshake packet: ${(perSocket / KiB).toFixed(2)} KiB (${SOCKETS} sockets)`)
    t.ok(perSocket < 4 * KiB, `at most a few KiB of buffers per idle socket (measured ${(perSocket / KiB).toFixed(2)} KiB)`)
  })
}

async function waitUntil (cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((resolve) => setTimeout(resolve, 10))
}
