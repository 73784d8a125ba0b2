// handshakeTimeout: hooks that never finish cannot hold an upgrade socket forever.
import t from 'tap'
import { connect } from 'node:net'
import { buildApp, listen, handshake, within, delay, RawWs } from '../helpers/index.js'

t.test('an upgrade whose onRequest hook never finishes is destroyed after handshakeTimeout', async (t) => {
  const { app, logs } = await buildApp({ handshakeTimeout: 200 })
  app.get('/stuck', { websocket: true, onRequest: () => new Promise<void>(() => {}) }, () => {})
  app.get('/fine', { websocket: true }, (socket) => { socket.send('hi') })
  const port = await listen(app)
  t.teardown(() => app.close())
  const socket = connect({ host: '127.0.0.1', port })
  const received: Buffer[] = []
  socket.on('data', (c: Buffer) => received.push(c))
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.on('error', () => {})
  socket.write(handshake('/stuck', port))
  const start = Date.now()
  await within(closed, 3000, 'the server gives the socket up')
  const elapsed = Date.now() - start
  t.ok(elapsed >= 150, `not before the timeout (${elapsed} ms)`)
  t.equal(Buffer.concat(received).length, 0, 'no 101 and no response: the socket is just closed')
  t.ok(logs.find('handshakeTimeout').length === 1, 'logged once, naming the option')
  // A handshake that completes in time is unaffected, and its socket outlives the timeout.
  const ok = await RawWs.connect(port, '/fine', { passive: true })
  t.equal(ok.status, 101)
  await delay(400)
  t.equal(ok.socket.destroyed, false, 'an upgraded socket is not subject to handshakeTimeout')
  ok.destroy()
})

t.test('handshakeTimeout is validated and plugin-wide only', async (t) => {
  await t.rejects(buildApp({ handshakeTimeout: -1 }), { code: 'FST_WS_INVALID_OPTION', message: /handshakeTimeout/ })
  await t.rejects(buildApp({ handshakeTimeout: '5s' as unknown as number }), { code: 'FST_WS_INVALID_OPTION' })
  const { app } = await buildApp({ handshakeTimeout: 0 })
  t.throws(() => app.get('/r', { websocket: { handshakeTimeout: 10 } as never }, () => {}), { code: 'FST_WS_INVALID_OPTION', message: /websocket\.handshakeTimeout/ })
  await app.close()
})
