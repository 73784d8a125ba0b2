// The raw clients clean up after themselves: a deadline that passes destroys the client's socket instead of
// leaving it open to the end of the run.
import t, { type Test } from 'tap'
import { createServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { RawWs, rawHttp, within } from './index.js'

/** A TCP server on 127.0.0.1 that accepts connections and never answers. Resolves with its port and the accepted sockets. */
async function silentServer (t: Test): Promise<{ port: number, accepted: Socket[] }> {
  const accepted: Socket[] = []
  const server = createServer((socket) => {
    accepted.push(socket)
    socket.on('error', () => {})
    socket.resume() // read (and drop) what arrives, so the client's FIN is seen
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of accepted) s.destroy()
    server.close()
  })
  return { port: (server.address() as AddressInfo).port, accepted }
}

function peerClosed (socket: Socket | undefined, ms: number): Promise<void> {
  if (socket === undefined) return Promise.reject(new Error('no connection was accepted'))
  if (socket.destroyed) return Promise.resolve()
  return within(new Promise<void>((resolve) => socket.once('close', () => resolve())), ms, 'the client to close its socket')
}

t.test('RawWs.connect: a handshake past its deadline rejects and closes the connection', async (t) => {
  const { port, accepted } = await silentServer(t)
  await t.rejects(RawWs.connect(port, '/ws', { ms: 100 }), /timed out after 100 ms/)
  await t.resolves(peerClosed(accepted[0], 1000), 'the server side sees the client go')
})

t.test('rawHttp: a response past its deadline rejects and closes the connection', async (t) => {
  const { port, accepted } = await silentServer(t)
  await t.rejects(rawHttp(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 100 }), /timed out after 100 ms/)
  await t.resolves(peerClosed(accepted[0], 1000), 'the server side sees the client go')
})
