/**
 * The socket object handlers receive: a typed, ws-like API over a Connection.
 * It holds messages that arrive before anyone listens (no message is lost),
 * offers async iteration with inbound backpressure, and topics.
 */
import { EventEmitter } from 'node:events'
import { CONNECTING, OPEN, CLOSING, CLOSED, OPCODE_BINARY, OPCODE_TEXT, EMPTY_BUFFER } from '../protocol/constants.js'
import { Connection, PAUSE_INBOUND, type ConnectionOptions } from '../protocol/connection.js'
import type { WriteCallback } from '../protocol/sender.js'
import { isValidSendCloseCode } from '../protocol/close-codes.js'
import {
  FST_WS_INVALID_CLOSE_CODE, FST_WS_REASON_TOO_LONG, FST_WS_CONTROL_TOO_LARGE, FST_WS_INVALID_DATA,
  FST_WS_NOT_OPEN, FST_WS_INVALID_TOPIC, type WebSocketError
} from '../errors.js'
import type { Duplex } from 'node:stream'

export type ReadyState = typeof CONNECTING | typeof OPEN | typeof CLOSING | typeof CLOSED

/** The events a WebSocket emits, with their listener arguments. */
export interface WebSocketEvents {
  /** A whole message: `data` is its payload; text messages are valid UTF-8 (`data.toString()`). */
  message: [data: Buffer, isBinary: boolean]
  /** The connection is closed: the peer's close code (1005 none given, 1006 abnormal) and reason. */
  close: [code: number, reason: string]
  /** A protocol violation, limit, or listener failure; the socket is closing. Logged when nobody listens. */
  error: [error: WebSocketError]
  ping: [data: Buffer]
  pong: [data: Buffer]
  /** The outbound buffer went back under the high-water mark after `send()` returned false. */
  drain: []
}

export type SendData = string | Buffer | ArrayBuffer | ArrayBufferView

export interface SendOptions {
  /** Send as a binary message. Default: true for buffers, false for strings. */
  binary?: boolean
}

/** A message yielded by async iteration: text as a string, binary as a Buffer. */
export type IteratedMessage = string | Buffer

export interface SocketLog { warn (obj: object, msg: string): void, error (obj: object, msg: string): void }

/** What the sockets of one route share: limits, topics, and who to tell when one closes. */
export interface SocketContext {
  inboundHighWaterMark: number
  topics: TopicHub | null
  /** Called once, when the socket has closed. */
  release: ((socket: WebSocket) => void) | null
}

export interface TopicHub {
  subscribe (socket: WebSocket, topic: string): void
  unsubscribe (socket: WebSocket, topic: string): void
}

interface Held { data: Buffer, isBinary: boolean }

/** What a held message counts for besides its payload, so that a flood of empty messages pauses reading too. */
const HELD_MESSAGE_OVERHEAD = 64

const emitMessage = EventEmitter.prototype.emit
/** Shared by every socket until it first holds a message (never pushed to). */
const NO_HELD: Held[] = []

/** A 'message' listener arrived: deliver what was held, once the caller has finished attaching. */
function onNewListener (this: WebSocket, event: string | symbol): void {
  if (event === 'message') this._scheduleFlush()
}

function toBuffer (data: SendData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  throw new FST_WS_INVALID_DATA(data === null ? 'null' : typeof data)
}

export class WebSocket<Protocol extends string = string> extends EventEmitter<WebSocketEvents> {
  static readonly CONNECTING = CONNECTING
  static readonly OPEN = OPEN
  static readonly CLOSING = CLOSING
  static readonly CLOSED = CLOSED
  // On the prototype, not on every instance.
  get CONNECTING (): typeof CONNECTING { return CONNECTING }
  get OPEN (): typeof OPEN { return OPEN }
  get CLOSING (): typeof CLOSING { return CLOSING }
  get CLOSED (): typeof CLOSED { return CLOSED }

  /** The negotiated subprotocol, or '' when none was. */
  readonly protocol: Protocol | ''
  /** The negotiated extensions, as sent in Sec-WebSocket-Extensions ('' when none). */
  readonly extensions: string
  private readonly conn: Connection
  private readonly ctx: SocketContext
  private readonly log: SocketLog
  private held: Held[] = NO_HELD
  private heldBytes = 0
  private iterating = false
  private waiter: ((result: IteratorResult<IteratedMessage>) => void) | null = null
  private subscribed: Set<string> | null = null
  private closeInfo: [number, string] | null = null

  /** @internal Sockets are created by the plugin (server role) or `injectWS` (client role). */
  constructor (
    socket: Duplex, options: ConnectionOptions, protocol: Protocol | '', extensions: string, ctx: SocketContext, log: SocketLog
  ) {
    super()
    this.protocol = protocol
    this.extensions = extensions
    this.ctx = ctx
    this.log = log
    this.conn = new Connection(socket, this, options)
    EventEmitter.prototype.on.call(this as EventEmitter, 'newListener', onNewListener)
  }

  /** @internal */
  _scheduleFlush (): void {
    if (this.held.length > 0 && !this.iterating) queueMicrotask(() => this.flushHeld())
  }

  /** @internal */
  _start (head: Buffer | null): void {
    this.conn.start(head)
  }

  get readyState (): ReadyState {
    return this.conn.readyState as ReadyState
  }

  /** Bytes accepted by send() and not yet handed to the operating system. */
  get bufferedAmount (): number {
    return this.conn.bufferedAmount
  }

  /** The raw stream under the socket (a net.Socket on a real connection). */
  get rawSocket (): Duplex {
    return this.conn.socket
  }

  /**
   * Send one message. Strings are sent as text unless `binary: true`; buffers as binary unless `binary: false`.
   * Returns false when the outbound buffer is over its high-water mark (wait for 'drain') or the socket is not open
   * (then nothing was sent and `cb` receives FST_WS_NOT_OPEN). `cb` runs once the frame is handed to the OS.
   */
  send (data: SendData, options?: SendOptions | WriteCallback, cb?: WriteCallback): boolean {
    if (typeof options === 'function') {
      cb = options
      options = undefined
    }
    const conn = this.conn
    if (conn.readyState !== OPEN) {
      const err = new FST_WS_NOT_OPEN(String(conn.readyState))
      if (cb !== undefined) process.nextTick(cb, err)
      return false
    }
    const binary = options?.binary
    if (typeof data === 'string') {
      if (binary === true) conn.sender.sendMessage(OPCODE_BINARY, Buffer.from(data), cb)
      else conn.sender.sendText(data, cb)
    } else {
      conn.sender.sendMessage(binary === false ? OPCODE_TEXT : OPCODE_BINARY, toBuffer(data), cb)
    }
    return conn.afterWrite()
  }

  /** Resolves once everything sent so far has been handed to the OS; rejects if the socket closes first. */
  flush (): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.conn.readyState === CLOSED) {
        reject(new FST_WS_NOT_OPEN(String(CLOSED)))
        return
      }
      if (this.bufferedAmount === 0) {
        resolve()
        return
      }
      const socket = this.conn.socket
      if (socket.writableEnded) {
        // Closing: nothing more may be written, wait for what is buffered to finish.
        socket.once('finish', () => resolve())
        socket.once('close', () => reject(new FST_WS_NOT_OPEN(String(CLOSED))))
        return
      }
      // Through the sender, so that messages still waiting for compression are waited for too.
      this.conn.sender.flush((err?: Error | null) => { if (err) reject(err); else resolve() })
    })
  }

  /** Start the closing handshake. `code` must be 1000 or 3000-4999 (or another sendable code); `reason` at most 123 bytes. */
  close (code?: number, reason?: string): void {
    if (code !== undefined && (!Number.isInteger(code) || !isValidSendCloseCode(code))) {
      throw new FST_WS_INVALID_CLOSE_CODE(code)
    }
    const text = reason ?? ''
    if (text.length > 0) {
      if (code === undefined) throw new FST_WS_INVALID_CLOSE_CODE('(none: a reason needs a code)')
      const bytes = Buffer.byteLength(text)
      if (bytes > 123) throw new FST_WS_REASON_TOO_LONG(bytes)
    }
    this.conn.close(code, text)
  }

  ping (data?: SendData, cb?: WriteCallback): void {
    this.control(data, cb, true)
  }

  pong (data?: SendData, cb?: WriteCallback): void {
    this.control(data, cb, false)
  }

  private control (data: SendData | undefined, cb: WriteCallback | undefined, ping: boolean): void {
    const payload = data === undefined ? EMPTY_BUFFER : typeof data === 'string' ? Buffer.from(data) : toBuffer(data)
    if (payload.length > 125) throw new FST_WS_CONTROL_TOO_LARGE(payload.length)
    if (this.conn.readyState !== OPEN) throw new FST_WS_NOT_OPEN(String(this.conn.readyState))
    if (ping) this.conn.ping(payload, cb)
    else this.conn.pong(payload, cb)
  }

  /** Destroy the connection at once, without a closing handshake. */
  terminate (): void {
    this.conn.terminate()
  }

  // ---- topics ----
  get topics (): ReadonlySet<string> {
    return this.subscribed ?? EMPTY_TOPICS
  }

  subscribe (topic: string): void {
    const hub = this.requireHub(topic)
    if (this.readyState !== OPEN) return
    if (this.subscribed !== null && this.subscribed.has(topic)) return
    // The hub first: it enforces the topic limits (and may throw) against the topics held so far.
    hub.subscribe(this, topic)
    if (this.subscribed === null) this.subscribed = new Set()
    this.subscribed.add(topic)
  }

  unsubscribe (topic: string): void {
    const hub = this.requireHub(topic)
    if (this.subscribed === null || !this.subscribed.delete(topic)) return
    hub.unsubscribe(this, topic)
  }

  isSubscribed (topic: string): boolean {
    return this.subscribed !== null && this.subscribed.has(topic)
  }

  private requireHub (topic: string): TopicHub {
    if (typeof topic !== 'string' || topic.length === 0) throw new FST_WS_INVALID_TOPIC('a topic is a non-empty string')
    if (this.ctx.topics === null) throw new FST_WS_INVALID_TOPIC('topics are only available on server sockets')
    return this.ctx.topics
  }

  /** @internal Write an already framed message (topic fan-out). Returns false when not written. */
  _writeFrame (frame: Buffer): boolean {
    const conn = this.conn
    if (conn.readyState !== OPEN) return false
    conn.sender.writeRaw(frame)
    conn.afterWrite()
    return true
  }

  // ---- async iteration ----
  [Symbol.asyncIterator] (): AsyncIterableIterator<IteratedMessage> {
    this.iterating = true
    const next = (): Promise<IteratorResult<IteratedMessage>> => {
      const item = this.takeHeld()
      if (item !== undefined) return Promise.resolve({ value: item, done: false })
      if (this.closeInfo !== null || !this.iterating) return Promise.resolve({ value: undefined, done: true })
      return new Promise((resolve) => { this.waiter = resolve })
    }
    const iterator: AsyncIterableIterator<IteratedMessage> = {
      next,
      return: (): Promise<IteratorResult<IteratedMessage>> => {
        this.iterating = false
        const waiter = this.waiter
        this.waiter = null
        if (waiter !== null) waiter({ value: undefined, done: true })
        if (this.listenerCount('message') > 0) this._scheduleFlush()
        return Promise.resolve({ value: undefined, done: true })
      },
      [Symbol.asyncIterator]: () => iterator
    }
    return iterator
  }

  private takeHeld (): IteratedMessage | undefined {
    const item = this.held.shift()
    if (item === undefined) return undefined
    this.release(item.data.length)
    return item.isBinary ? item.data : item.data.toString()
  }

  // ---- ConnectionHost ----
  /** @internal */
  _onMessage (data: Buffer, isBinary: boolean): void {
    if (this.iterating) {
      const waiter = this.waiter
      if (waiter !== null && this.held.length === 0) {
        this.waiter = null
        waiter({ value: isBinary ? data : data.toString(), done: false })
        return
      }
    } else if (this.held.length === 0 && this.listenerCount('message') > 0) {
      this.deliver(data, isBinary)
      return
    }
    if (this.held === NO_HELD) this.held = []
    this.held.push({ data, isBinary })
    this.heldBytes += data.length + HELD_MESSAGE_OVERHEAD
    if (this.heldBytes > this.ctx.inboundHighWaterMark) this.conn.pause(PAUSE_INBOUND)
  }

  private deliver (data: Buffer, isBinary: boolean): void {
    try {
      emitMessage.call(this, 'message', data, isBinary)
    } catch (err) {
      this._failFromUser(err, 'message listener threw')
    }
  }

  private flushHeld (): void {
    while (this.held.length > 0 && !this.iterating && this.listenerCount('message') > 0) {
      const item = this.held.shift()!
      this.release(item.data.length)
      this.deliver(item.data, item.isBinary)
    }
  }

  private release (bytes: number): void {
    this.heldBytes -= bytes + HELD_MESSAGE_OVERHEAD
    if (this.heldBytes <= this.ctx.inboundHighWaterMark / 2) this.conn.resume(PAUSE_INBOUND)
  }

  /** @internal A handler or listener failed: log it and close with 1011 (Internal Error). */
  _failFromUser (err: unknown, what: string): void {
    this.log.error({ err }, `WebSocket ${what}; closing with 1011`)
    if (this.conn.readyState === OPEN) this.conn.close(1011, '')
  }

  /** @internal */
  _onPing (data: Buffer): void {
    if (this.listenerCount('ping') > 0) this.emit('ping', data)
  }

  /** @internal */
  _onPong (data: Buffer): void {
    if (this.listenerCount('pong') > 0) this.emit('pong', data)
  }

  /** @internal */
  _onDrain (): void {
    this.emit('drain')
  }

  /** @internal An error with no listener is logged, never thrown. */
  _onError (err: WebSocketError): void {
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', err)
      } catch (listenerErr) {
        this.log.error({ err: listenerErr }, 'WebSocket error listener threw')
      }
    } else {
      this.log.warn({ err }, 'WebSocket connection failed')
    }
  }

  /** @internal */
  _onClose (code: number, reason: string): void {
    this.closeInfo = [code, reason]
    if (this.ctx.release !== null) this.ctx.release(this)
    if (this.subscribed !== null && this.ctx.topics !== null) {
      for (const topic of this.subscribed) this.ctx.topics.unsubscribe(this, topic)
      this.subscribed = null
    }
    const waiter = this.waiter
    if (waiter !== null && this.held.length === 0) {
      this.waiter = null
      waiter({ value: undefined, done: true })
    }
    try {
      this.emit('close', code, reason)
    } catch (err) {
      this.log.error({ err }, 'WebSocket close listener threw')
    }
  }
}

const EMPTY_TOPICS: ReadonlySet<string> = new Set()
