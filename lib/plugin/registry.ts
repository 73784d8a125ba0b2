/**
 * The one owner of open sockets and connection counts: the set of open sockets (`app.websocketServer.clients`
 * is a read-only view of it), each route's count, the plugin-wide and per-route `maxConnections` checks, the
 * closing flag, and closing every socket on shutdown.
 *
 * accept.ts asks `admit(slot)` before upgrading and `add(socket, slot)` once the socket exists; a socket reports
 * its close through its route's `SocketContext.release`, which is the slot's `release` (one function per route,
 * not per socket).
 */
import type { WebSocket } from '../socket/websocket.js'
import type { Rejection } from '../http/handshake.js'

/** One route's share of the registry. */
export interface RouteSlot {
  /** The route's own limit (Infinity when only the plugin's applies). */
  readonly maxConnections: number
  /** Open sockets of this route. */
  readonly open: number
  /** For the route's SocketContext.release: called once when one of its sockets has closed. */
  readonly release: (socket: WebSocket) => void
}

const SHUTTING_DOWN: Rejection = { status: 503, reason: 'Server is shutting down' }
const TOO_MANY: Rejection = { status: 503, reason: 'Too many WebSocket connections (see the "maxConnections" option)' }

/** The registry's own, writable view of a slot. */
interface CountedSlot extends RouteSlot {
  open: number
}

export class ConnectionRegistry {
  readonly #sockets = new Set<WebSocket>()
  readonly #maxConnections: number
  #closing = false
  /** Set by closeAll(): resolves once the last socket has been released. */
  #drained: (() => void) | null = null

  constructor (maxConnections: number) {
    this.#maxConnections = maxConnections
  }

  /** Every open socket, live. */
  get clients (): ReadonlySet<WebSocket> {
    return this.#sockets
  }

  /** Set once the app closes: new upgrades are refused. */
  get closing (): boolean {
    return this.#closing
  }

  /** A route's slot, created once when the route is registered. */
  route (maxConnections: number): RouteSlot {
    const slot: CountedSlot = {
      maxConnections,
      open: 0,
      release: (socket: WebSocket): void => {
        if (!this.#sockets.delete(socket)) return
        slot.open--
        if (this.#sockets.size === 0 && this.#drained !== null) this.#drained()
      }
    }
    return slot
  }

  /** Whether one more socket may open on this route: null if so, else the 503 to answer. */
  admit (slot: RouteSlot): Rejection | null {
    if (this.#closing) return SHUTTING_DOWN
    if (this.#sockets.size >= this.#maxConnections || slot.open >= slot.maxConnections) return TOO_MANY
    return null
  }

  /** Count a socket that has just been upgraded (after admit()). */
  add (socket: WebSocket, slot: RouteSlot): void {
    if (this.#sockets.has(socket)) return
    this.#sockets.add(socket)
    ;(slot as CountedSlot).open++
  }

  /** Refuse new upgrades, close every socket with 1001 and resolve once all are closed (each is destroyed after its closeTimeout). */
  closeAll (): Promise<void> {
    this.#closing = true
    if (this.#sockets.size === 0) return Promise.resolve()
    // Released by the sockets themselves as they close (before their 'close' listeners run, so a throwing
    // user listener cannot hold shutdown up).
    const drained = new Promise<void>((resolve) => { this.#drained = resolve })
    for (const socket of [...this.#sockets]) socket.close(1001, 'Server shutting down')
    return drained
  }
}
