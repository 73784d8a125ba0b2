/**
 * The connection state machine: owns the byte stream, the frame parser and writer, and drives the close
 * handshake (RFC 6455 §7), ping/pong, the heartbeat and the close timer. It is the one owner of every queue's
 * backpressure: outbound bytes (sent and waiting for compression), messages held for a consumer that is not
 * consuming, and input waiting while a message inflates. Reading from the peer pauses while any of them is over
 * its bound and resumes when none is.
 *
 * It knows nothing of the public API: it reports to its owner (the WebSocket) through a table of hook
 * functions shared by every connection, so no connection carries closures of its own.
 */
import type { Duplex } from 'node:stream'
import { CLOSED, CLOSING, OPEN, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG, EMPTY_BUFFER } from './constants.js'
import { Receiver, type ReceiverHost } from './receiver.js'
import { Sender, type WriteCallback } from './sender.js'
import { HeldMessages, type HeldMessage } from './held-messages.js'
import type { PerMessageDeflate } from '../extensions/permessage-deflate/codec.js'
import { FST_WS_DEFLATE_ERROR, FST_WS_SLOW_CONSUMER, FST_WS_HEARTBEAT_TIMEOUT } from '../errors.js'
import { closingError, type ClosingError } from './closing-error.js'

/** What a connection reports, as functions of its owner (one table for all connections of a kind). */
export interface ConnectionHooks<Owner> {
  message (owner: Owner, data: Buffer, isBinary: boolean): void
  ping (owner: Owner, data: Buffer): void
  pong (owner: Owner, data: Buffer): void
  /** The connection failed (protocol violation, limit, heartbeat): it is already closing. */
  error (owner: Owner, err: ClosingError): void
  drain (owner: Owner): void
  /** A user's send/ping/pong/flush callback threw. */
  callbackError (owner: Owner, err: unknown): void
  /** Exactly once, when the TCP connection is gone. */
  close (owner: Owner, code: number, reason: string): void
}

export interface HeartbeatOptions {
  /** Ping a socket that has been silent this long (ms). */
  interval: number
  /** Terminate it if nothing arrives within this long after the ping (ms). */
  timeout: number
}

/** Limits and role; one object shared by every connection of a route. */
export interface ConnectionOptions {
  isServer: boolean
  maxPayload: number
  closeTimeout: number
  sendHighWaterMark: number
  maxBufferedAmount: number
  drainTimeout: number
  /** Bytes of held messages, and of input waiting behind an inflating message, before reading pauses. */
  inboundHighWaterMark: number
  heartbeat: HeartbeatOptions | null
  deflate: PerMessageDeflate | null
}

/** Reasons reading from the socket is paused; reading resumes when none is left. */
const PAUSE_HELD = 1
const PAUSE_OUTBOUND = 2
const PAUSE_BACKLOG = 4

export class Connection<Owner = unknown> implements ReceiverHost {
  readonly socket: Duplex
  readyState: number = OPEN
  private readonly receiver: Receiver
  private readonly sender: Sender
  private readonly owner: Owner
  private readonly hooks: ConnectionHooks<Owner>
  /** Shared by every socket of a route: one pointer instead of a copy of each limit. */
  private readonly options: ConnectionOptions
  private readonly deflate: PerMessageDeflate | null
  private held: HeldMessages | null = null
  private closeSent = false
  private closeReceived = false
  private closeCode = 1006
  private closeReason = ''
  private closeTimer: NodeJS.Timeout | null = null
  private pauseReasons = 0
  private drainTimer: NodeJS.Timeout | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private awaitingPong = false
  private active = false
  private closedEmitted = false
  /** The peer half-closed while a message was still inflating: finish once the parser has caught up. */
  private peerEnded = false
  private ending = false

  constructor (socket: Duplex, owner: Owner, hooks: ConnectionHooks<Owner>, options: ConnectionOptions) {
    const deflate = options.deflate
    this.socket = socket
    this.owner = owner
    this.hooks = hooks
    this.options = options
    this.deflate = deflate
    this.receiver = new Receiver(this, { isServer: options.isServer, maxPayload: options.maxPayload, deflate })
    this.sender = new Sender(socket, !options.isServer, this, deflate)
  }

  /** Start reading: `head` holds bytes that arrived with the handshake (parsed now, not kept). */
  start (head: Buffer | null): void {
    const socket = this.socket as OwnedSocket
    // Shared listener functions find their connection through the socket: no closures per connection.
    socket[kConnection] = this
    socket.on('error', socketOnError)
    socket.on('close', socketOnClose)
    socket.on('end', socketOnEnd)
    socket.on('drain', socketOnDrain)
    if (this.options.heartbeat !== null) this.scheduleHeartbeat(this.options.heartbeat.interval)
    if (head !== null && head.length > 0) this.onData(head)
    socket.on('data', socketOnData)
    if (socket.destroyed) queueMicrotask(() => this.onSocketClose())
    else if (socket.readableEnded) queueMicrotask(() => this.onEnd())
  }

  /** Bytes accepted for sending and not yet handed to the OS (including messages waiting for compression). */
  get bufferedAmount (): number {
    return this.socket.writableLength + this.sender.pendingBytes
  }

  /** Parse a chunk. Replies written meanwhile are batched by the sender (one writev per tick). */
  onData (chunk: Buffer): void {
    this.active = true
    this.receiver.push(chunk)
  }

  // ---- held messages ----
  /** Keep a message for a consumer that is not consuming yet; reading pauses past inboundHighWaterMark. */
  hold (data: unknown, isBinary: boolean, length: number): void {
    const held = this.held ?? (this.held = new HeldMessages())
    if (this.closeSent && held.bytes > this.options.inboundHighWaterMark) {
      // Only once our Close is out does reading go on past the mark (to reach the peer's Close, behind
      // whatever it sent meanwhile); what arrives then, beyond the mark, is dropped, not held.
      return
    }
    held.push(data, isBinary, length)
    if (held.bytes > this.options.inboundHighWaterMark && !this.closeSent) this.pause(PAUSE_HELD)
  }

  /** The oldest held message, if any; reading resumes once half of the bound is free again. */
  takeHeld (): HeldMessage | undefined {
    const held = this.held
    if (held === null) return undefined
    const item = held.shift()
    if (item !== undefined && held.bytes <= this.options.inboundHighWaterMark / 2) this.resume(PAUSE_HELD)
    return item
  }

  get heldCount (): number {
    return this.held === null ? 0 : this.held.length
  }

  // ---- ReceiverHost ----
  onMessage (data: Buffer, isBinary: boolean): void {
    this.hooks.message(this.owner, data, isBinary)
  }

  onPing (data: Buffer): void {
    if (this.readyState === OPEN) {
      this.sender.sendControl(OPCODE_PONG, data)
      // A ping flood from a peer that does not read its pongs is outbound pressure like any other.
      this.afterWrite()
    }
    this.hooks.ping(this.owner, data)
  }

  onPong (data: Buffer): void {
    this.awaitingPong = false
    this.hooks.pong(this.owner, data)
  }

  onCloseFrame (code: number, reason: string): void {
    this.closeReceived = true
    this.closeCode = code
    this.closeReason = reason
    if (!this.closeSent) {
      // Echo the peer's status code (§5.5.1); a Close without status is echoed without one.
      this.sendClose(code === 1005 ? EMPTY_BUFFER : closePayload(code, ''))
    }
    this.readyState = CLOSING
    // The server ends TCP first (§7.1.1); a client whose peer already ended (the FIN came in the same burst,
    // behind a message that was inflating) ends too.
    if (this.options.isServer || this.peerEnded) this.endSocket()
    this.armCloseTimer()
  }

  onProtocolError (err: ClosingError): void {
    this.fail(err)
  }

  onBacklog (bytes: number): void {
    const limit = this.options.inboundHighWaterMark
    if (bytes > limit) this.pause(PAUSE_BACKLOG)
    else if (bytes <= limit / 2) this.resume(PAUSE_BACKLOG)
    if (bytes === 0 && this.peerEnded && !this.receiver.busy) this.onEnd()
  }

  /** Fail the connection (§7.1.7): report, send a Close if none was sent, end TCP, destroy after closeTimeout. */
  fail (err: ClosingError): void {
    if (this.readyState === CLOSED) return
    this.receiver.stop()
    if (this.closeCode === 1006 && !this.closeReceived) this.closeCode = err.closeCode
    // CLOSING before the error is reported: a listener's send() or close() must not go out ahead of our Close.
    const wasOpen = this.readyState === OPEN
    this.readyState = CLOSING
    this.hooks.error(this.owner, err)
    if (!this.closeSent && wasOpen) this.sendClose(closePayload(err.closeCode, ''))
    this.endSocket()
    this.armCloseTimer()
  }

  // ---- actions from the public API ----
  /** Send a whole text message from a string. Returns false when the caller should wait for 'drain'. */
  sendText (text: string, cb?: WriteCallback): boolean {
    this.sender.sendText(text, cb)
    return this.afterWrite()
  }

  /** Send a whole data message (text or binary opcode). Returns false when the caller should wait for 'drain'. */
  sendMessage (opcode: number, data: Buffer, cb?: WriteCallback): boolean {
    this.sender.sendMessage(opcode, data, cb)
    return this.afterWrite()
  }

  /** Write bytes that are already one whole frame (topic fan-out). Returns false when not open. */
  writeFrame (frame: Buffer): boolean {
    if (this.readyState !== OPEN) return false
    this.sender.writeRaw(frame)
    this.afterWrite()
    return true
  }

  /** `cb` once everything sent so far (including messages waiting for compression) is handed to the OS. */
  flush (cb: WriteCallback): void {
    this.sender.flush(cb)
  }

  close (code: number | undefined, reason: string): void {
    if (this.readyState !== OPEN) return
    this.readyState = CLOSING
    this.sendClose(code === undefined ? EMPTY_BUFFER : closePayload(code, reason))
    this.armCloseTimer()
  }

  terminate (): void {
    if (this.readyState === CLOSED) return
    this.readyState = CLOSING
    this.receiver.stop()
    this.socket.destroy()
  }

  ping (data: Buffer, cb?: WriteCallback): void {
    this.sender.sendControl(OPCODE_PING, data, cb)
    this.afterWrite()
  }

  pong (data: Buffer, cb?: WriteCallback): void {
    this.sender.sendControl(OPCODE_PONG, data, cb)
    this.afterWrite()
  }

  /** After a write: apply the outbound policy. Returns whether the caller may keep sending. */
  private afterWrite (): boolean {
    const buffered = this.bufferedAmount
    if (buffered <= this.options.sendHighWaterMark) return true
    // A single large send may pass the limit on a healthy socket; a socket already paused for not
    // draining, that keeps being sent to past the limit, is a peer that cannot keep up.
    if (buffered > this.options.maxBufferedAmount && (this.pauseReasons & PAUSE_OUTBOUND) !== 0) {
      this.slowConsumer()
      return false
    }
    if ((this.pauseReasons & PAUSE_OUTBOUND) === 0) {
      // Stop reading from a peer that does not read our replies, until it catches up.
      this.pause(PAUSE_OUTBOUND)
      if (this.options.drainTimeout > 0) {
        this.drainTimer = setTimeout(this.slowConsumer.bind(this), this.options.drainTimeout)
        this.drainTimer.unref()
      }
    }
    return false
  }

  private pause (reason: number): void {
    if (this.pauseReasons === 0) this.socket.pause()
    this.pauseReasons |= reason
  }

  private resume (reason: number): void {
    if ((this.pauseReasons & reason) === 0) return
    this.pauseReasons &= ~reason
    if (this.pauseReasons === 0 && this.readyState !== CLOSED) this.socket.resume()
  }

  private slowConsumer (): void {
    if (this.readyState !== OPEN) return
    this.fail(closingError(new FST_WS_SLOW_CONSUMER(this.options.maxBufferedAmount), 1008))
  }

  onSendError (err: Error): void {
    this.fail(closingError(new FST_WS_DEFLATE_ERROR(err.message), 1011))
  }

  onCallbackError (err: unknown): void {
    this.hooks.callbackError(this.owner, err)
  }

  private sendClose (payload: Buffer): void {
    this.closeSent = true
    this.sender.sendControl(OPCODE_CLOSE, payload)
    // A consumer that is not consuming must not keep us from reading the peer's answer to our Close.
    this.resume(PAUSE_HELD)
  }

  /**
   * Half-close our side, once, after everything already sent (messages still being compressed, then our
   * Close). Ending an ended socket makes Node build an error (with its stack) for nothing.
   */
  private endSocket (): void {
    if (this.ending) return
    this.ending = true
    this.sender.end()
  }

  private armCloseTimer (): void {
    if (this.closeTimer !== null) return
    this.closeTimer = setTimeout(destroySocket, this.options.closeTimeout, this.socket)
    this.closeTimer.unref()
  }

  onSocketDrain (): void {
    if ((this.pauseReasons & PAUSE_OUTBOUND) !== 0 && this.bufferedAmount <= this.options.sendHighWaterMark) {
      if (this.drainTimer !== null) {
        clearTimeout(this.drainTimer)
        this.drainTimer = null
      }
      this.resume(PAUSE_OUTBOUND)
    }
    this.hooks.drain(this.owner)
  }

  onEnd (): void {
    // A message still inflating, and what came after it (perhaps the peer's Close), is processed first.
    if (this.receiver.busy) {
      this.peerEnded = true
      return
    }
    this.peerEnded = false
    // The peer half-closed: finish our side too (http servers allow half-open sockets).
    if (this.readyState === OPEN) this.readyState = CLOSING
    this.receiver.stop()
    this.endSocket()
    this.armCloseTimer()
  }

  onSocketError (): void {
    // ECONNRESET and the like: the 'close' event that follows reports 1006.
    this.receiver.stop()
    this.socket.destroy()
  }

  onSocketClose (): void {
    if (this.closedEmitted) return
    this.closedEmitted = true
    this.readyState = CLOSED
    this.receiver.stop()
    if (this.closeTimer !== null) clearTimeout(this.closeTimer)
    if (this.drainTimer !== null) clearTimeout(this.drainTimer)
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer)
    this.closeTimer = this.drainTimer = this.heartbeatTimer = null
    this.socket.removeListener('data', socketOnData)
    if (this.deflate !== null) this.deflate.close()
    if (this.sender.hasQueued) this.sender.abort(new Error('WebSocket closed before the message was sent'))
    this.hooks.close(this.owner, this.closeCode, this.closeReason)
  }

  // ---- heartbeat ----
  private scheduleHeartbeat (delay: number): void {
    this.heartbeatTimer = setTimeout(this.onHeartbeat, delay, this)
    this.heartbeatTimer.unref()
  }

  private onHeartbeat (this: void, self: Connection<Owner>): void {
    const hb = self.options.heartbeat!
    if (self.readyState !== OPEN) return
    if (self.awaitingPong && !self.active) {
      // CLOSING before the error is reported, as in fail(): a listener's send() must see a socket that is going.
      self.readyState = CLOSING
      self.hooks.error(self.owner, closingError(new FST_WS_HEARTBEAT_TIMEOUT(hb.timeout), 1006))
      self.terminate()
      return
    }
    if (self.active) {
      self.active = false
      self.awaitingPong = false
      self.scheduleHeartbeat(hb.interval)
      return
    }
    self.awaitingPong = true
    self.sender.sendControl(OPCODE_PING, EMPTY_BUFFER)
    self.scheduleHeartbeat(hb.timeout)
  }
}

const kConnection = Symbol('fastify-rfc6455.connection')
type OwnedSocket = Duplex & { [kConnection]?: Connection }

function socketOnData (this: OwnedSocket, chunk: Buffer): void {
  this[kConnection]!.onData(chunk)
}

function socketOnEnd (this: OwnedSocket): void {
  this[kConnection]!.onEnd()
}

function socketOnClose (this: OwnedSocket): void {
  this[kConnection]!.onSocketClose()
}

function socketOnError (this: OwnedSocket): void {
  this[kConnection]!.onSocketError()
}

function socketOnDrain (this: OwnedSocket): void {
  this[kConnection]!.onSocketDrain()
}

function destroySocket (socket: Duplex): void {
  socket.destroy()
}

export function closePayload (code: number, reason: string): Buffer {
  const len = Buffer.byteLength(reason)
  const buf = Buffer.allocUnsafe(2 + len)
  buf.writeUInt16BE(code, 0)
  if (len > 0) buf.write(reason, 2)
  return buf
}
