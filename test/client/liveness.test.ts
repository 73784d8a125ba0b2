// Liveness from the client side: probes only after `idle` ms of silence, a connection that silently stops
// forwarding (a TCP proxy that neither forwards nor closes) is declared dead and replaced, no probe while the
// page is hidden and one at once when it becomes visible, 'online' retries at once, and a connect timeout.
import t from 'tap'
import { createServer, type Socket } from 'node:net'
import { connect, type Client } from '../../lib/client/index.js'
import { NodeWebSocket } from '../../lib/client/node-transport.js'
import { within, waitFor, delay } from '../helpers/index.js'
import { startEnvelopeServer, startProxy, FakeClock } from './envelope-server.js'

function next (client: Client, event: 'open' | 'reconnecting', ms = 3000): Promise<void> {
  return within(new Promise<void>((resolve) => {
    const listener = (): void => { client.off(event, listener); resolve() }
    client.on(event, listener)
  }), ms, `the client's '${event}'`)
}

t.test('a connection that silently stops forwarding is declared dead after idle + timeout and replaced', async (t) => {
  const server = await startEnvelopeServer()
  const proxy = await startProxy(server.port)
  const client = connect(`ws://127.0.0.1:${proxy.port}/env`, {
    WebSocket: NodeWebSocket, liveness: { idle: 200, timeout: 200 }, reconnect: { base: 1, cap: 1 }
  })
  t.teardown(async () => { client.close(); await proxy.close(); await server.close() })
  const closes: Array<[number, string]> = []
  client.on('close', (code, reason) => { closes.push([code, reason]) })
  await next(client, 'open')

  // Traffic keeps it quiet: no probe while frames arrive more often than `idle`.
  for (let i = 0; i < 8; i++) { server.push({ m: i }); await delay(50) }
  t.same(server.frames.filter((f) => 'p' in f), [], 'no probe while messages arrive')
  // Silence: one probe after idle, answered, the connection stays.
  await waitFor(() => server.frames.some((f) => 'p' in f), 2000, 'a probe')
  t.same(server.frames.filter((f) => 'p' in f), [{ p: 1 }])
  await delay(250)
  t.same(closes, [], 'an answered probe keeps the connection')

  const frozenAt = Date.now()
  proxy.freeze()
  const reopened = next(client, 'open', 5000)
  await reopened
  const took = Date.now() - frozenAt
  t.same(closes, [[1006, 'No answer to the liveness probe']])
  // At most idle + timeout after the last frame (less when a probe was already out at the freeze); 3 s is slack.
  t.ok(took < 3000, `replaced ${took} ms after the freeze (idle 200 + timeout 200 at most, plus scheduling)`)
  t.equal(server.sockets.length, 2, 'a new connection')
  t.equal(client.state, 'open')
})

t.test('liveness: false sends no probe', async (t) => {
  const server = await startEnvelopeServer()
  const clock = new FakeClock()
  const client = connect(`ws://127.0.0.1:${server.port}/env`, { WebSocket: NodeWebSocket, clock, liveness: false })
  t.teardown(async () => { client.close(); await server.close() })
  await next(client, 'open')
  t.same(clock.pending, [], 'no timer at all while open')
})

t.test('a hidden page does not probe; it probes at once when visible again; online retries at once', async (t) => {
  const listeners: Record<string, Array<() => void>> = {}
  const doc = {
    visibilityState: 'hidden',
    addEventListener (e: string, l: () => void) { (listeners[e] ??= []).push(l) },
    removeEventListener (e: string, l: () => void) { listeners[e] = (listeners[e] ?? []).filter((x) => x !== l) }
  }
  const g = globalThis as { document?: unknown, addEventListener?: unknown, removeEventListener?: unknown }
  g.document = doc
  g.addEventListener = doc.addEventListener
  g.removeEventListener = doc.removeEventListener
  t.teardown(() => { delete g.document; delete g.addEventListener; delete g.removeEventListener })
  const fire = (e: string): void => { for (const l of listeners[e] ?? []) l() }

  const server = await startEnvelopeServer()
  const clock = new FakeClock()
  const client = connect(`ws://127.0.0.1:${server.port}/env`, {
    WebSocket: NodeWebSocket, clock, random: () => 0.5, liveness: { idle: 1000, timeout: 500 }, reconnect: { base: 60_000 }
  })
  t.teardown(async () => { client.close(); await server.close() })
  await next(client, 'open')
  clock.advance(10_000)
  await delay(50)
  t.same(server.frames, [], 'hidden: no probe however long it is quiet')
  doc.visibilityState = 'visible'
  fire('visibilitychange')
  await waitFor(() => server.frames.length === 1, 2000, 'the probe')
  t.same(server.frames, [{ p: 1 }], 'visible: a probe at once')
  await delay(50) // the answer arrives
  clock.advance(500)
  t.equal(client.state, 'open', 'answered')
  fire('online')
  await waitFor(() => server.frames.length === 2, 2000, 'the second probe')
  t.same(server.frames[1], { p: 2 }, "'online': a probe at once")

  // Waiting 30 s for the next attempt: 'online' tries now.
  const dropped = next(client, 'reconnecting')
  server.sockets[0]!.terminate()
  await dropped
  const reopened = next(client, 'open')
  fire('online')
  await reopened
  t.equal(server.sockets.length, 2)
  client.close()
  t.same(listeners, { visibilitychange: [], online: [] }, 'stopping removes the page listeners')
})

t.test('a server that accepts TCP but never answers the handshake: connectTimeout gives up and retries', async (t) => {
  const held: Socket[] = []
  const mute = createServer((s) => { held.push(s) })
  await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { for (const s of held) s.destroy(); await new Promise((resolve) => mute.close(resolve)) })
  const client = connect(`ws://127.0.0.1:${(mute.address() as { port: number }).port}/`, {
    WebSocket: NodeWebSocket, connectTimeout: 150, reconnect: { base: 1, maxAttempts: 1 }
  })
  t.teardown(() => client.close())
  const started = Date.now()
  const stopped = within(new Promise((resolve) => { client.on('stopped', resolve) }), 3000, 'stopped')
  t.same(await stopped, { reason: 'max-attempts', attempts: 1 })
  t.ok(Date.now() - started >= 280, 'two attempts of 150 ms')
  t.equal(held.length, 2)
})
