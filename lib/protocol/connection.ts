/**
 * The connection state machine: owns the byte stream, the frame parser and
 * writer, and drives the close handshake (RFC 6455 §7), ping/pong, the
 * heartbeat, the close timer and backpressure in both directions. It knows
 * nothing of the public API: it reports to a ConnectionHost (the WebSocket).
 */
import type { Duplex } from 'node:stream'
import { CLOSED, CLOSING, OPEN, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG, EMPTY_BUFFER } from './constants.js'
import { Receiver, type ReceiverHost } from './receiver.js'
import { Sender, type WriteCallback } from './sender.js'
import type { PerMessageDeflate } from '../extensions/permessage-deflate/codec.js'
import {
  FST_WS_PROTOCOL_ERROR, FST_WS_INVALID_UTF8, FST_WS_MESSAGE_TOO_BIG, FST_WS_DEFLATE_ERROR,
  FST_WS_SLOW_CONSUMER, FST_WS_HEARTBEAT_TIMEOUT, type WebSocketError
} from '../errors.js'
import { closingError } from './closing-error.js'

export interface ConnectionHost {
  _onMessage (data: Buffer, isBinary: boolean): void
  _onPing (data: Buffer): void
  _onPong (data: Buffer): void
  _onError (err: WebSocketError): void
  _onDrain (): void
  _onClose (code: number, reason: string): void
}

export interface HeartbeatOptions {
  /** Ping a socket that has been silent this long (ms). */
  interval: number
  /** Terminate it if nothing arrives within this long after the ping (ms). */
  timeout: number
}

export interface ConnectionOptions {
  isServer: boolean
  maxPayload: number
  closeTimeout: number
  sendHighWaterMark: number
  maxBufferedAmount: number
  drainTimeout: number
  heartbeat: HeartbeatOptions | null
  deflate: PerMessageDeflate | null
}

/** Reasons reading from the socket is paused; reading resumes when none is left. */
export const PAUSE_INBOUND = 1
export const PAUSE_OUTBOUND = 2

const PROTOCOL_ERRORS: Record<string, (message: string) => Error> = {
  FST_WS_PROTOCOL_ERROR: (m) => new FST_WS_PROTOCOL_ERROR(m),
  FST_WS_INVALID_UTF8: (m) => new FST_WS_INVALID_UTF8(m),
  FST_WS_MESSAGE_TOO_BIG: (m) => new FST_WS_MESSAGE_TOO_BIG(m),
  FST_WS_DEFLATE_ERROR: (m) => new FST_WS_DEFLATE_ERROR(m)
}

export class Connection implements ReceiverHost {
  readonly socket: Duplex
  readonly receiver: Receiver
  readonly sender: Sender
  readyState: number = OPEN
  private readonly host: ConnectionHost
  /** Shared by every socket of a route: one pointer instead of a copy of each limit. */
  private readonly options: ConnectionOptions
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

  constructor (socket: Duplex, host: ConnectionHost, options: ConnectionOptions) {
    this.socket = socket
    this.host = host
    this.options = options
    this.receiver = new Receiver(this, options)
    this.sender = new Sender(socket, !options.isServer, this, options.deflate)
  }

  /** Start reading: `head` holds bytes that arrived with the handshake. */
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

  get bufferedAmount (): number {
    return this.socket.writableLength + this.sender.pendingBytes
  }

  /** Parse a chunk. Replies written meanwhile are batched by the sender (one writev per tick). */
  onData (chunk: Buffer): void {
    this.active = true
    this.receiver.push(chunk)
  }

  // ---- ReceiverHost ----
  onMessage (data: Buffer, isBinary: boolean): void {
    this.host._onMessage(data, isBinary)
  }

  onPing (data: Buffer): void {
    if (this.readyState === OPEN) {
      this.sender.sendControl(OPCODE_PONG, data)
      // A ping flood from a peer that does not read its pongs is outbound pressure like any other.
      this.afterWrite()
    }
    this.host._onPing(data)
  }

  onPong (data: Buffer): void {
    this.awaitingPong = false
    this.host._onPong(data)
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
    if (this.options.isServer) this.endSocket()
    this.armCloseTimer()
  }

  onProtocolError (closeCode: number, code: string, message: string): void {
    const make = PROTOCOL_ERRORS[code] ?? PROTOCOL_ERRORS.FST_WS_PROTOCOL_ERROR!
    const err = closingError(make(message), closeCode) as WebSocketError
    this.fail(closeCode, err)
  }

  /** Fail the connection (§7.1.7): report, send a Close if none was sent, end TCP, destroy after closeTimeout. */
  fail (closeCode: number, err: WebSocketError): void {
    if (this.readyState === CLOSED) return
    this.receiver.stop()
    if (this.closeCode === 1006 && !this.closeReceived) this.closeCode = closeCode
    // CLOSING before the error is reported: a listener's send() or close() must not go out ahead of our Close.
    const wasOpen = this.readyState === OPEN
    this.readyState = CLOSING
    this.host._onError(err)
    if (!this.closeSent && wasOpen) this.sendClose(closePayload(closeCode, ''))
    this.endSocket()
    this.armCloseTimer()
  }

  // ---- actions from the public API ----
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
  }

  pong (data: Buffer, cb?: WriteCallback): void {
    this.sender.sendControl(OPCODE_PONG, data, cb)
  }

  /** After a write: apply the outbound policy. Returns whether the caller may keep sending. */
  afterWrite (): boolean {
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

  pause (reason: number): void {
    if (this.pauseReasons === 0) this.socket.pause()
    this.pauseReasons |= reason
  }

  resume (reason: number): void {
    if ((this.pauseReasons & reason) === 0) return
    this.pauseReasons &= ~reason
    if (this.pauseReasons === 0 && this.readyState !== CLOSED) this.socket.resume()
  }

  private slowConsumer (): void {
    if (this.readyState !== OPEN) return
    const err = closingError(new FST_WS_SLOW_CONSUMER(this.options.maxBufferedAmount), 1008) as WebSocketError
    this.fail(1008, err)
  }

  onSendError (err: Error): void {
    this.fail(1011, closingError(new FST_WS_DEFLATE_ERROR(err.message), 1011) as WebSocketError)
  }

  private sendClose (payload: Buffer): void {
    this.closeSent = true
    this.sender.sendControl(OPCODE_CLOSE, payload)
  }

  /** Half-close our side once: ending an ended socket makes Node build an error (with its stack) for nothing. */
  private endSocket (): void {
    if (!this.socket.writableEnded) this.socket.end()
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
    this.host._onDrain()
  }

  onEnd (): void {
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
    if (this.sender.hasQueued) this.sender.abort(new Error('WebSocket closed before the message was sent'))
    if (this.options.deflate !== null) this.options.deflate.close()
    this.host._onClose(this.closeCode, this.closeReason)
  }

  // ---- heartbeat ----
  private scheduleHeartbeat (delay: number): void {
    this.heartbeatTimer = setTimeout(this.onHeartbeat, delay, this)
    this.heartbeatTimer.unref()
  }

  private onHeartbeat (this: void, self: Connection): void {
    const hb = self.options.heartbeat!
    if (self.readyState !== OPEN) return
    if (self.awaitingPong && !self.active) {
      const err = closingError(new FST_WS_HEARTBEAT_TIMEOUT(hb.timeout), 1006) as WebSocketError
      self.host._onError(err)
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
