/**
 * Two connected in-memory streams: what one writes, the other reads.
 * Used by injectWS to run a real handshake and real frames without a port.
 */
import { Duplex } from 'node:stream'

class End extends Duplex {
  peer: End | null = null
  private pendingCallback: (() => void) | null = null
  localPort: number | undefined
  remoteAddress = '127.0.0.1'

  override _read (): void {
    const cb = this.pendingCallback
    if (cb !== null) {
      this.pendingCallback = null
      cb()
    }
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const peer = this.peer
    if (peer === null || peer.destroyed) {
      // As over TCP: writing to a peer that is gone fails (the stream then errors and closes).
      callback(Object.assign(new Error('write EPIPE: the other end of the in-memory connection is gone'), { code: 'EPIPE' }))
      return
    }
    // Honour the reader's backpressure: hold our callback until it asks for more.
    if (peer.push(chunk)) callback()
    else peer.pendingCallback = callback
  }

  override _final (callback: (err?: Error | null) => void): void {
    if (this.peer !== null && !this.peer.destroyed) this.peer.push(null)
    callback()
  }

  override _destroy (err: Error | null, callback: (err: Error | null) => void): void {
    const peer = this.peer
    this.peer = null
    // A write of the peer's that waited for us to read: we never will; let it complete (its bytes are gone,
    // as over TCP).
    const blocked = this.pendingCallback
    this.pendingCallback = null
    if (blocked !== null) blocked()
    if (peer !== null && !peer.destroyed) {
      // The peer still reads what it had received (as over TCP, where those bytes are already in its buffer),
      // then sees end of stream; it closes itself once it has finished its side.
      peer.peer = null
      peer.push(null)
    }
    callback(err)
  }
}

export type DuplexEnd = End

export function duplexPair (): [End, End] {
  const a = new End({ allowHalfOpen: true })
  const b = new End({ allowHalfOpen: true })
  a.peer = b
  b.peer = a
  return [a, b]
}
