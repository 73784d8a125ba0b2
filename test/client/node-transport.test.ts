// The Node transport's handshake: headers sent, a response that is not a valid 101 (wrong accept key, a head
// that never ends), binary frames (not part of the envelope) ignored, and a WebSocket class that throws.
import t from 'tap'
import { createServer, type Socket } from 'node:net'
import { connect, type StopReason, type WebSocketLike } from '../../lib/client/index.js'
import { NodeWebSocket } from '../../lib/client/node-transport.js'
import { buildApp, within, waitFor } from '../helpers/index.js'
import { selfSignedCert } from '../helpers/http2-client.js'
import { SUBPROTOCOL } from '../../lib/client/index.js'

function stopped (client: ReturnType<typeof connect>): Promise<StopReason> {
  return within(new Promise<StopReason>((resolve) => { client.on('stopped', resolve) }), 3000, "'stopped'")
}

/** A TCP server that answers every request with `response(requestHead)`. */
async function fakeServer (t: { teardown (fn: () => unknown): void }, response: (head: string) => string): Promise<{ port: number, heads: string[] }> {
  const heads: string[] = []
  const sockets: Socket[] = []
  const server = createServer((s) => {
    sockets.push(s)
    let head = ''
    s.on('data', (d) => {
      head += d.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      heads.push(head)
      s.write(response(head))
    }).on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { for (const s of sockets) s.destroy(); await new Promise((resolve) => server.close(resolve)) })
  return { port: (server.address() as { port: number }).port, heads }
}

t.test('the request head: path and query, Host, the subprotocol, extra headers', async (t) => {
  const { port, heads } = await fakeServer(t, () => 'HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n')
  const client = connect(`ws://127.0.0.1:${port}/a/b?c=d`, { WebSocket: NodeWebSocket, headers: { authorization: 'Bearer x' } })
  t.teardown(() => client.close())
  t.same(await stopped(client), { reason: 'handshake-refused', status: 403 })
  const head = heads[0]!
  t.match(head, /^GET \/a\/b\?c=d HTTP\/1\.1\r\n/)
  t.match(head, `host: 127.0.0.1:${port}\r\n`)
  t.match(head, `sec-websocket-protocol: ${SUBPROTOCOL}\r\n`)
  t.match(head, 'authorization: Bearer x\r\n')
  t.notMatch(head, /sec-websocket-extensions/i, 'no compression offered')
})

t.test('a 101 with a wrong Sec-WebSocket-Accept fails the connection (1002) and stops', async (t) => {
  const { port } = await fakeServer(t, () =>
    `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: wrong\r\nsec-websocket-protocol: ${SUBPROTOCOL}\r\n\r\n`)
  const client = connect(`ws://127.0.0.1:${port}/`, { WebSocket: NodeWebSocket })
  t.teardown(() => client.close())
  t.same(await stopped(client), { reason: 'close-code', code: 1002, message: 'Invalid Sec-WebSocket-Accept in the server response' })
})

t.test('a response head that never ends is cut off at 16 KiB (1002)', async (t) => {
  const { port } = await fakeServer(t, () => 'HTTP/1.1 200 OK\r\n' + `x-filler: ${'a'.repeat(20_000)}\r\n`)
  const client = connect(`ws://127.0.0.1:${port}/`, { WebSocket: NodeWebSocket })
  t.teardown(() => client.close())
  t.same(await stopped(client), { reason: 'close-code', code: 1002, message: 'Response head too large' })
})

t.test('binary frames are not part of the envelope: ignored', async (t) => {
  const { app } = await buildApp({}, {}, 'warn')
  app.get('/b', { websocket: { selectProtocol: () => SUBPROTOCOL } }, (socket) => {
    socket.send(Buffer.from('{"m":"binary"}'))
    socket.send('{"m":"text"}')
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const client = connect(`ws://127.0.0.1:${(app.server.address() as { port: number }).port}/b`, { WebSocket: NodeWebSocket })
  t.teardown(() => client.close())
  const got: unknown[] = []
  client.on('message', (m) => { got.push(m) })
  await waitFor(() => got.length === 1, 2000, 'the text message')
  t.same(got, ['text'])
})

t.test('a WebSocket class that throws (a bad URL for it): stopped, no-transport', async (t) => {
  class Throwing implements WebSocketLike {
    protocol = ''
    onopen = null
    onmessage = null
    onclose = null
    onerror = null
    constructor () { throw new SyntaxError('not for me') }
    send (): void {}
    close (): void {}
  }
  const client = connect('ws://127.0.0.1:1/', { WebSocket: Throwing })
  const why = await stopped(client)
  t.equal(why.reason, 'no-transport')
  t.match((why as { error: Error }).error, { message: 'not for me' })
})

t.test('wss: over TLS, trusting the server certificate given as ca; refused without it', async (t) => {
  const { key, cert } = selfSignedCert()
  const { app } = await buildApp({}, { https: { key, cert } } as object, 'warn')
  app.get('/s', { websocket: { selectProtocol: () => SUBPROTOCOL } }, (socket) => {
    socket.on('message', (data) => socket.send(JSON.stringify({ r: (JSON.parse(data.toString()) as { q: number }).q, m: 'secure' })))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const port = (app.server.address() as { port: number }).port
  const client = connect(`wss://localhost:${port}/s`, { WebSocket: NodeWebSocket, ca: cert })
  t.teardown(() => client.close())
  t.equal(await within(client.request('x'), 5000, 'the reply'), 'secure', 'a request over TLS')

  const untrusted = connect(`wss://localhost:${port}/s`, { WebSocket: NodeWebSocket, reconnect: false })
  t.teardown(() => untrusted.close())
  t.same(await stopped(untrusted), { reason: 'max-attempts', attempts: 0 }, 'a certificate nobody trusts: the attempt fails')
})
