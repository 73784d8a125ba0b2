// ConnectionRegistry: the one owner of open sockets, per-route counts, limits, the closing flag and close-all.
import t from 'tap'
import { EventEmitter } from 'node:events'
import { ConnectionRegistry } from '../../lib/plugin/registry.js'
import type { WebSocket } from '../../lib/socket/websocket.js'

/** Just what the registry uses of a socket: readyState, CLOSED, close(), once('close'). */
class FakeSocket extends EventEmitter {
  readonly CLOSED = 3
  readyState = 1
  closedWith: number | null = null
  close (code: number): void {
    this.closedWith = code
    this.readyState = 3
    setImmediate(() => this.emit('close', code, ''))
  }
}

function fake (): WebSocket & FakeSocket {
  return new FakeSocket() as unknown as WebSocket & FakeSocket
}

t.test('admit, add and release keep the plugin and route counts', async (t) => {
  const registry = new ConnectionRegistry(3)
  const a = registry.route(Infinity)
  const b = registry.route(1)
  t.equal(registry.admit(a), null)
  const s1 = fake()
  registry.add(s1, a)
  registry.add(s1, a)
  t.equal(a.open, 1, 'adding the same socket twice counts it once')
  const s2 = fake()
  t.equal(registry.admit(b), null)
  registry.add(s2, b)
  t.match(registry.admit(b), { status: 503, reason: /maxConnections/ }, 'the route limit')
  const s3 = fake()
  registry.add(s3, a)
  t.equal(registry.clients.size, 3)
  t.match(registry.admit(a), { status: 503, reason: /maxConnections/ }, 'the plugin limit counts every route')
  b.release(s2)
  b.release(s2)
  t.equal(b.open, 0, 'released once, whatever the number of calls')
  t.equal(registry.clients.size, 2)
  t.equal(registry.admit(b), null)
  t.same([...registry.clients], [s1, s3])
})

t.test('closeAll: refuses new upgrades, closes every open socket with 1001, resolves once all closed', async (t) => {
  const registry = new ConnectionRegistry(Infinity)
  const slot = registry.route(Infinity)
  const sockets = [fake(), fake()]
  for (const s of sockets) registry.add(s, slot)
  sockets[0]!.on('close', () => slot.release(sockets[0]!))
  sockets[1]!.on('close', () => slot.release(sockets[1]!))
  const done = registry.closeAll()
  t.equal(registry.closing, true)
  t.match(registry.admit(slot), { status: 503, reason: /shutting down/ })
  await done
  t.same(sockets.map((s) => s.closedWith), [1001, 1001])
  t.equal(registry.clients.size, 0)
  t.equal(slot.open, 0)
})
