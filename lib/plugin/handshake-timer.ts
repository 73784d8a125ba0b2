/**
 * handshakeTimeout without a timer per handshake: pending upgrades sit in one set that an unref'd interval
 * sweeps. (A timer per upgrade, even cleared at once, cost ~1 KB of RSS per idle connection in the
 * benchmark; net.Socket#setTimeout is worse, it keeps the cleared timer for the socket's lifetime.)
 */
import type { Duplex } from 'node:stream'

export interface TimedHandshake {
  socket: Duplex
  /** Set once the socket belongs to a WebSocket. */
  done: boolean
  deadline: number
}

export class HandshakeTimer {
  private readonly timeout: number
  private readonly period: number
  private readonly onTimeout: (pending: TimedHandshake) => void
  private readonly pending = new Set<TimedHandshake>()
  private interval: NodeJS.Timeout | null = null

  constructor (timeout: number, onTimeout: (pending: TimedHandshake) => void) {
    this.timeout = timeout
    // The deadline is honoured within a quarter of the timeout (at most a second) after it passes.
    this.period = Math.max(10, Math.min(1000, Math.floor(timeout / 4)))
    this.onTimeout = onTimeout
  }

  track (pending: TimedHandshake): void {
    pending.deadline = Date.now() + this.timeout
    this.pending.add(pending)
    if (this.interval === null) {
      this.interval = setInterval(this.sweep.bind(this), this.period)
      this.interval.unref()
    }
  }

  untrack (pending: TimedHandshake): void {
    this.pending.delete(pending)
  }

  private sweep (): void {
    const now = Date.now()
    for (const p of this.pending) {
      if (p.done || p.socket.destroyed) this.pending.delete(p)
      else if (p.deadline <= now) {
        this.pending.delete(p)
        this.onTimeout(p)
      }
    }
    if (this.pending.size === 0 && this.interval !== null) {
      clearInterval(this.interval)
      this.interval = null
    }
  }

  /** Stop sweeping (the app is closing). */
  stop (): void {
    this.pending.clear()
    if (this.interval !== null) clearInterval(this.interval)
    this.interval = null
  }
}
