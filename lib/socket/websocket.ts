/**
 * The socket object handlers receive: a typed, ws-like API over a Connection. Messages that arrive before anyone
 * consumes them are held by the connection (no message is lost) and delivered in order to the first 'message'
 * listener or async iterator. A listener that throws, or returns a promise that rejects, closes the socket with
 * 1011 and is logged: nothing a listener does can reach the process as an uncaught error.
 *
 * Everything the plugin needs beyond the public API (creating, starting, failing a socket, writing a ready-made
 * frame) is reached through the functions exported at the bottom of this file, not through members: the class's
 * published shape is the documented API only.
 */
import { EventEmitter, captureRejectionSymbol } from 'node:events'
import type { Duplex } from 'node:stream'
import { CONNECTING, OPEN, CLOSING, CLOSED, OPCODE_BINARY, OPCODE_TEXT, EMPTY_BUFFER } from '../protocol/constants.js'
import { Connection, type ConnectionHooks, type ConnectionOptions } from '../protocol/connection.js'
import type { WriteCallback } from '../protocol/sender.js'
import { isValidSendCloseCode } from '../protocol/close-codes.js'
import { toBuffer, toBytes, type SendData } from './send-data.js'
import {
  FST_WS_INVALID_CLOSE_CODE, FST_WS_REASON_TOO_LONG, FST_WS_CONTROL_TOO_LARGE, FST_WS_NOT_OPEN, FST_WS_INVALID_TOPIC,
  FST_WS_INVALID_MESSAGE, FST_WS_INVALID_HANDLER, FST_WS_NO_ENVELOPE, FST_WS_REQUEST_TIMEOUT, FST_WS_REQUEST_FAILED,
  FST_WS_REQUEST_CLOSED, type WebSocketError, type InvalidMessageError
} from '../errors.js'
import type { ClosingError } from '../protocol/closing-error.js'
import type { HeldMessage } from '../protocol/held-messages.js'
import type { SubscribeOptions, SubscribeResult, TopicGap, TopicPosition } from '../topics/types.js'
import {
  ENVELOPE_PROTOCOL, MAX_PENDING_REQUESTS, classify, gapFrame, messageFrame, probeAnswer, replyErrorFrame, replyFrame, requestFrame
} from './envelope.js'

export type { SendData } from './send-data.js'
export type { WriteCallback } from '../protocol/sender.js'
/** `readyState` values, as in the WHATWG WebSocket interface: CONNECTING, OPEN, CLOSING, CLOSED. */
export type ReadyState = 0 | 1 | 2 | 3

/**
 * The message type of a socket whose route declared no `messages.receive` schema (a brand, never a value): its
 * 'message' listeners get `(data: Buffer, isBinary: boolean)`.
 */
export interface RawMessages { readonly 'fastify-rfc6455:raw-messages': true }

/** The arguments of a 'message' listener: `(data, isBinary)` on a raw route, `(message)` on a route with a schema. */
export type MessageArgs<Incoming> = [Incoming] extends [RawMessages] ? [data: Buffer, isBinary: boolean] : [message: Incoming]

/**
 * The `type` values `socket.onMessage()` accepts: those of a route's inbound messages when its `receive` schema is
 * a union discriminated by a string `type` field (any string when the messages are untyped, none on a raw route).
 */
export type MessageTypeOf<Incoming> = [Incoming] extends [RawMessages] ? never
  : unknown extends Incoming ? string
    : Incoming extends { type: infer T extends string } ? T : never

/** The inbound message of one `type`: the union's variant, narrowed (`unknown` when the messages are untyped). */
export type MessageOfType<Incoming, Type extends string> = unknown extends Incoming ? unknown : Extract<Incoming, { type: Type }>

/** A per-type message handler (`socket.onMessage()`): the validated message, narrowed to its variant, and the socket. */
export type MessageHandler<Message, Socket> = (this: Socket, message: Message, socket: Socket) => unknown

/** The events a WebSocket emits, with their listener arguments. */
export interface WebSocketEvents<Incoming = RawMessages> {
  /**
   * A whole message. Raw routes: `data` is its payload, text messages are valid UTF-8 (`data.toString()`). Routes
   * with a `messages.receive` schema: the parsed and validated message.
   */
  message: MessageArgs<Incoming>
  /** Routes with `messages.onInvalid: 'emit'`: a message that was not JSON or did not match the schema. */
  invalid: [error: InvalidMessageError]
  /** The connection is closed: the peer's close code (1005 none given, 1006 abnormal) and reason. */
  close: [code: number, reason: string]
  /** A protocol violation, limit, or listener failure; the socket is closing. Logged when nobody listens. */
  error: [error: WebSocketError]
  ping: [data: Buffer]
  pong: [data: Buffer]
  /** The outbound buffer went back under the high-water mark after `send()` returned false. */
  drain: []
  /**
   * A subscribed topic may have lost messages for this socket after its subscription became live (the topic
   * broker lost its connection and could not recover them, or the topic's epoch changed). Forward it to the client
   * so it reloads what it shows. Delivery continues after `gap.offset`.
   */
  topicGap: [gap: TopicGap]
}

export interface SendOptions {
  /** Send as a binary message. Default: true for buffers, false for strings. */
  binary?: boolean
}

/** A message yielded by async iteration: text as a string, binary as a Buffer (raw routes), else the validated message. */
export type IteratedMessage<Incoming = RawMessages> = [Incoming] extends [RawMessages] ? string | Buffer : Incoming

type DecodedMessage = { ok: true, value: unknown } | { ok: false, reason: 'binary' | 'json' | 'schema', errors: unknown }

/** How the sockets of a route with message schemas read and write messages (plugin/message-schemas.ts). */
export interface MessageCodecLike {
  readonly onInvalid: 'close' | 'emit'
  /** Whether inbound messages are parsed and validated. */
  readonly validates: boolean
  decode (data: Buffer, isBinary: boolean): DecodedMessage
  /** Validate an already parsed message. */
  check (value: unknown): DecodedMessage
  encode (message: unknown): string
}

export interface SocketLog { warn (obj: object, msg: string): void, error (obj: object, msg: string): void }

/** Where a socket's topic subscriptions go: called before the socket records a topic, so it may refuse it (throw). */
export interface TopicHub {
  subscribe (socket: WebSocket, topic: string, options: SubscribeOptions | undefined): SubscribeResult | Promise<SubscribeResult>
  unsubscribe (socket: WebSocket, topic: string): void
}

/** What the sockets of one route share: topics, and who to tell when one closes. */
export interface SocketContext {
  topics: TopicHub | null
  /** The route's message schemas, compiled; null for a raw route. */
  messages: MessageCodecLike | null
  /** Called once, when the socket has closed. */
  release: ((socket: WebSocket) => void) | null
}

const emit = EventEmitter.prototype.emit
const EMPTY_TOPICS: ReadonlySet<string> = new Set()

/** A 'message' listener arrived: deliver what was held, once the caller has finished attaching. */
function onNewListener (this: WebSocket, event: string | symbol): void {
  if (event === 'message') scheduleFlush(this)
}

function checkSubscribeOptions (options: SubscribeOptions): void {
  if (typeof options !== 'object' || options === null) throw new FST_WS_INVALID_TOPIC('subscribe options must be an object')
  const since = options.since
  if (since === undefined || since === 'history') return
  if (typeof since !== 'object' || since === null || typeof since.epoch !== 'string' ||
      typeof since.offset !== 'number' || !Number.isSafeInteger(since.offset) || since.offset < 0) {
    throw new FST_WS_INVALID_TOPIC("since must be { epoch: string, offset: integer ≥ 0 } or 'history'")
  }
}

function notOpen (state: number, cb: WriteCallback | undefined): false {
  if (cb !== undefined) process.nextTick(cb, new FST_WS_NOT_OPEN(String(state)))
  return false
}

// Set in the class's static block, where #private members are in reach.
let hooks: ConnectionHooks<WebSocket>
let connectionOf: (ws: WebSocket) => Connection<WebSocket>
let create: (socket: Duplex, options: ConnectionOptions, protocol: string, extensions: string, ctx: SocketContext, log: SocketLog) => WebSocket
let flushHeldOf: (ws: WebSocket) => void
let failUser: (ws: WebSocket, err: unknown, what: string) => void
let holding: (ws: WebSocket) => boolean

/** A handler of `socket.onMessage()` as the socket stores it. */
type AnyMessageHandler = (this: WebSocket, message: unknown, socket: WebSocket) => unknown
let emitGap: (ws: WebSocket, gap: TopicGap) => void
let envelopeOf: (ws: WebSocket) => boolean

/** A request handler as the socket stores it. */
type RequestHandler = (this: WebSocket, message: unknown, socket: WebSocket) => unknown

interface EnvelopeState {
  nextId: number
  /** Our requests waiting for the peer's reply. */
  pending: Map<number, { resolve: (v: unknown) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }>
  onRequest: RequestHandler | null
  /** The peer's requests that arrived before a handler was set. */
  waitingRequests: Array<{ id: number, value: unknown }>
  /** The client's topic positions (its resume frame), once known. */
  positions: ReadonlyMap<string, TopicPosition> | null
  positionWaiters: Array<(positions: ReadonlyMap<string, TopicPosition>) => void>
  positionTimer: NodeJS.Timeout | null
}

function newEnvelopeState (): EnvelopeState {
  return { nextId: 1, pending: new Map(), onRequest: null, waitingRequests: [], positions: null, positionWaiters: [], positionTimer: null }
}

const HANDLED: unique symbol = Symbol('handled')
const EMPTY_POSITIONS: ReadonlyMap<string, TopicPosition> = new Map()
/** Topics a client's resume frame may name (a socket holds at most maxTopicsPerSocket anyway). */
const MAX_RESUME_TOPICS = 10_000
function ignore (): void {}

export class WebSocket<Protocol extends string = string, Incoming = RawMessages, Outgoing = unknown> extends EventEmitter<WebSocketEvents<Incoming>> {
  static readonly CONNECTING: 0 = CONNECTING
  static readonly OPEN: 1 = OPEN
  static readonly CLOSING: 2 = CLOSING
  static readonly CLOSED: 3 = CLOSED
  // On the prototype, not on every instance.
  get CONNECTING (): 0 { return CONNECTING }
  get OPEN (): 1 { return OPEN }
  get CLOSING (): 2 { return CLOSING }
  get CLOSED (): 3 { return CLOSED }

  /** The negotiated subprotocol, or '' when none was. */
  readonly protocol: Protocol | ''
  /** The negotiated extensions, as sent in Sec-WebSocket-Extensions ('' when none). */
  readonly extensions: string
  readonly #conn: Connection<WebSocket>
  readonly #ctx: SocketContext
  readonly #log: SocketLog
  #iterating = false
  /** Pending next() calls of async iteration, oldest first (a caller may call next() again before one settles). */
  #waiters: Array<(result: IteratorResult<IteratedMessage<Incoming>>) => void> | null = null
  #subscribed: Set<string> | null = null
  #closed = false
  /** `onMessage()` handlers by message type (created by the first one). */
  #handlers: Map<unknown, AnyMessageHandler> | null = null
  /**
   * The oldest held message once taken out of the connection's queue and found to have no consumer yet (no handler
   * for its type, no 'message' listener): it stays first, everything after it waits behind it.
   */
  #parked: HeldMessage | undefined = undefined
  /** Reports a rejected `onMessage()` handler: made once per socket, on the first promise a handler returns. */
  #onHandlerRejected: ((err: unknown) => void) | null = null
  #warnedUnhandled = false
  /** The `fastify-rfc6455.v1` envelope's state when this socket negotiated it, else null. */
  readonly #env: EnvelopeState | null

  /** This socket as the plugin's registries see it: whatever its route's protocol and message types. */
  get #self (): WebSocket {
    return this as unknown as WebSocket
  }

  /** Sockets are created by the plugin (server role) and by `injectWS` (client role), never by hand. */
  private constructor (socket: Duplex, options: ConnectionOptions, protocol: Protocol | '', extensions: string, ctx: SocketContext, log: SocketLog) {
    super({ captureRejections: true })
    this.protocol = protocol
    this.extensions = extensions
    this.#ctx = ctx
    this.#log = log
    this.#env = protocol === ENVELOPE_PROTOCOL && ctx.messages !== null ? newEnvelopeState() : null
    this.#conn = new Connection<WebSocket>(socket, this.#self, hooks, options)
    EventEmitter.prototype.on.call(this as EventEmitter, 'newListener', onNewListener)
  }

  static {
    hooks = {
      message: (ws, data, isBinary) => ws.#onMessage(data, isBinary),
      ping: (ws, data) => { if (ws.listenerCount('ping') > 0) ws.#emitSafely('ping', data) },
      pong: (ws, data) => { if (ws.listenerCount('pong') > 0) ws.#emitSafely('pong', data) },
      error: (ws, err) => ws.#onError(err),
      drain: (ws) => { ws.#emitSafely('drain') },
      callbackError: (ws, err) => ws.#failFromUser(err, 'send callback threw'),
      close: (ws, code, reason) => ws.#onClose(code, reason)
    }
    connectionOf = (ws) => ws.#conn
    create = (socket, options, protocol, extensions, ctx, log) => new WebSocket(socket, options, protocol, extensions, ctx, log)
    flushHeldOf = (ws) => ws.#flushHeld()
    holding = (ws) => ws.#holding()
    failUser = (ws, err, what) => ws.#failFromUser(err, what)
    emitGap = (ws, gap) => {
      if (ws.#closed) return
      // A client of the envelope learns it directly (its 'gap' event); the app's listeners see it too.
      if (ws.#env !== null && ws.#conn.readyState === OPEN) ws.#conn.sendText(gapFrame(gap))
      ws.#emitSafely('topicGap', gap)
    }
    envelopeOf = (ws) => ws.#env !== null
  }

  get readyState (): ReadyState {
    return this.#conn.readyState as ReadyState
  }

  /** Bytes accepted by send() and not yet handed to the OS. */
  get bufferedAmount (): number {
    return this.#conn.bufferedAmount
  }

  /**
   * The raw stream under the socket: the net.Socket (tls.TLSSocket) of an HTTP/1.1 upgrade, or the ServerHttp2Stream
   * of a WebSocket over HTTP/2 (RFC 8441), whose `session` is shared with the other streams of its connection.
   */
  get rawSocket (): Duplex {
    return this.#conn.socket
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
    const conn = this.#conn
    if (conn.readyState !== OPEN) return notOpen(conn.readyState, cb)
    const binary = options?.binary
    if (typeof data === 'string') {
      return binary === true ? conn.sendMessage(OPCODE_BINARY, Buffer.from(data), cb) : conn.sendText(data, cb)
    }
    return conn.sendMessage(binary === false ? OPCODE_TEXT : OPCODE_BINARY, toBuffer(data), cb)
  }

  /**
   * Send one message as JSON text: serialized by the route's `messages.send` schema (with the instance's
   * serializer compiler; fields the schema does not declare are left out), else with JSON.stringify. Same return
   * value and callback as send().
   */
  sendMessage (message: Outgoing, cb?: WriteCallback): boolean {
    const conn = this.#conn
    if (conn.readyState !== OPEN) return notOpen(conn.readyState, cb)
    const codec = this.#ctx.messages
    const json = codec === null ? JSON.stringify(message) : codec.encode(message)
    return conn.sendText(this.#env === null ? json : messageFrame(json), cb)
  }

  /**
   * Send a request and resolve with the peer's reply (validated by the route's `receive` schema), on a socket that
   * speaks the `fastify-rfc6455.v1` envelope. Rejects with FST_WS_REQUEST_TIMEOUT after `timeout` ms (default
   * 10,000), FST_WS_REQUEST_FAILED when the peer answers with an error code (or an invalid reply),
   * FST_WS_REQUEST_CLOSED when the socket closes first (the peer may or may not have handled it), FST_WS_NOT_OPEN
   * when it is not open. Throws FST_WS_NO_ENVELOPE on a socket without the envelope.
   */
  request (message: Outgoing, options?: { timeout?: number }): Promise<Incoming> {
    const env = this.#env
    if (env === null) throw new FST_WS_NO_ENVELOPE('request()')
    const timeout = options?.timeout ?? 10_000
    if (typeof timeout !== 'number' || !(timeout > 0)) throw new FST_WS_INVALID_HANDLER('request() timeout must be a positive number of ms')
    const conn = this.#conn
    let result: Promise<Incoming>
    if (conn.readyState !== OPEN) {
      result = Promise.reject(new FST_WS_NOT_OPEN(String(conn.readyState)))
    } else if (env.pending.size >= MAX_PENDING_REQUESTS) {
      result = Promise.reject(new FST_WS_REQUEST_FAILED(`${MAX_PENDING_REQUESTS} requests already wait for a reply`))
    } else {
      const json = this.#ctx.messages!.encode(message)
      const id = env.nextId++
      result = new Promise<Incoming>((resolve, reject) => {
        const timer = setTimeout(() => {
          env.pending.delete(id)
          reject(new FST_WS_REQUEST_TIMEOUT(timeout))
        }, timeout)
        env.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      })
      conn.sendText(requestFrame(id, json))
    }
    // A caller that does not await still sees nothing unhandled (one that awaits gets the rejection).
    result.catch(ignore)
    return result
  }

  /**
   * Answer the peer's requests (`fastify-rfc6455.v1` envelope): `handler(message, socket)` gets each validated
   * request and returns the reply (or a promise of it), serialized by the route's `send` schema. A handler that
   * throws or rejects answers "failed" and is logged; requests that arrive before a handler is set wait for it (up
   * to 1,000). One handler per socket; returns the socket.
   */
  onRequest (handler: (this: this, message: Incoming, socket: this) => Outgoing | Promise<Outgoing>): this {
    const env = this.#env
    if (env === null) throw new FST_WS_NO_ENVELOPE('onRequest()')
    if (typeof handler !== 'function') throw new FST_WS_INVALID_HANDLER('onRequest() takes a function')
    if (env.onRequest !== null) throw new FST_WS_INVALID_HANDLER('the socket already has a request handler')
    env.onRequest = handler as unknown as RequestHandler
    const waiting = env.waitingRequests
    env.waitingRequests = []
    for (const r of waiting) this.#runRequest(r.id, r.value)
    return this
  }

  /**
   * The topic positions the client sent when it (re)connected (`fastify-rfc6455.v1` envelope: its first frame),
   * to resume with `subscribe(topic, { since: positions.get(topic) ?? 'history' })`. Resolves once that frame
   * arrived (an empty map when the client holds none, sends something else first, sends nothing within 5 s, or
   * the socket does not speak the envelope).
   */
  clientPositions (): Promise<ReadonlyMap<string, TopicPosition>> {
    const env = this.#env
    if (env === null) return Promise.resolve(EMPTY_POSITIONS)
    if (env.positions !== null) return Promise.resolve(env.positions)
    return new Promise((resolve) => {
      env.positionWaiters.push(resolve)
      if (env.positionTimer === null) {
        env.positionTimer = setTimeout(() => { this.#setPositions(EMPTY_POSITIONS) }, 5000)
        env.positionTimer.unref()
      }
    })
  }

  /**
   * Handle the inbound messages of one `type`, on a route whose `messages.receive` schema is a union discriminated
   * by a string `type` field: `handler(message, socket)` gets each validated message of that type, typed as its
   * variant. A message whose type has no handler goes to the 'message' event (its listeners, async iteration, or
   * held until one of them consumes, with the messages after it: order is kept). Messages that arrived before
   * the handler was set are handled in order. One handler per type; returns the socket, so calls chain. A handler
   * that throws or rejects closes the socket with 1011 and is logged, as a 'message' listener does.
   */
  onMessage<Type extends MessageTypeOf<Incoming>> (type: Type, handler: MessageHandler<MessageOfType<Incoming, Type>, this>): this {
    const codec = this.#ctx.messages
    if (codec === null || !codec.validates) throw new FST_WS_INVALID_HANDLER('onMessage() needs a route with a messages.receive schema')
    if (typeof type !== 'string') throw new FST_WS_INVALID_HANDLER(`the type must be a string, got ${typeof type}`)
    if (typeof handler !== 'function') throw new FST_WS_INVALID_HANDLER(`the handler of '${type}' must be a function`)
    const handlers = this.#handlers ??= new Map()
    if (handlers.has(type)) throw new FST_WS_INVALID_HANDLER(`'${type}' already has a handler`)
    handlers.set(type, handler as unknown as AnyMessageHandler)
    scheduleFlush(this.#self)
    return this
  }

  /** Resolves once everything sent so far has been handed to the OS; rejects if the socket closes first. */
  flush (): Promise<void> {
    return new Promise((resolve, reject) => {
      const conn = this.#conn
      if (conn.readyState === CLOSED) {
        reject(new FST_WS_NOT_OPEN(String(CLOSED)))
        return
      }
      if (conn.bufferedAmount === 0) {
        resolve()
        return
      }
      const socket = conn.socket
      if (socket.writableEnded) {
        // Closing: nothing more may be written, wait for what is buffered to finish (or the socket to go).
        const onFinish = (): void => {
          socket.removeListener('close', onClose)
          resolve()
        }
        const onClose = (): void => {
          socket.removeListener('finish', onFinish)
          reject(new FST_WS_NOT_OPEN(String(CLOSED)))
        }
        socket.once('finish', onFinish)
        socket.once('close', onClose)
        return
      }
      // Through the connection, so that messages still waiting for compression are waited for too.
      conn.flush((err?: Error | null) => { if (err) reject(err); else resolve() })
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
    this.#conn.close(code, text)
  }

  /**
   * Send a ping (at most 125 bytes, else FST_WS_CONTROL_TOO_LARGE is thrown). Like send(), on a socket that is not
   * open it sends nothing, returns false and reports FST_WS_NOT_OPEN to `cb`.
   */
  ping (data?: SendData, cb?: WriteCallback): boolean {
    return this.#control(data, cb, true)
  }

  /** Send an unsolicited pong; the same rules as ping(). */
  pong (data?: SendData, cb?: WriteCallback): boolean {
    return this.#control(data, cb, false)
  }

  #control (data: SendData | undefined, cb: WriteCallback | undefined, ping: boolean): boolean {
    const payload = data === undefined ? EMPTY_BUFFER : toBytes(data)
    if (payload.length > 125) throw new FST_WS_CONTROL_TOO_LARGE(payload.length)
    const conn = this.#conn
    if (conn.readyState !== OPEN) return notOpen(conn.readyState, cb)
    if (ping) conn.ping(payload, cb)
    else conn.pong(payload, cb)
    return true
  }

  /** Destroy the connection at once, without a closing handshake. */
  terminate (): void {
    this.#conn.terminate()
  }

  // ---- topics ----
  get topics (): ReadonlySet<string> {
    return this.#subscribed ?? EMPTY_TOPICS
  }

  /**
   * Receive what is published to `topic`. Resolves once the subscription is live (at once with the in-memory
   * broker; after the broker confirmed it with Redis), with the topic's position; with `since`, after the missed
   * messages were sent, or with `status: 'gap'` when they cannot be. Never rejects: a bad topic name or a topic
   * limit throws synchronously; a socket that is not open resolves `cancelled`, one already subscribed resolves
   * `unchanged`, without doing anything.
   */
  subscribe (topic: string, options?: SubscribeOptions): Promise<SubscribeResult> {
    const hub = this.#hub(topic)
    if (options !== undefined) checkSubscribeOptions(options)
    if (this.readyState !== OPEN) return Promise.resolve({ status: 'cancelled', topic })
    if (this.#subscribed !== null && this.#subscribed.has(topic)) return Promise.resolve({ status: 'unchanged', topic })
    // The hub first: it enforces the topic limits (and may throw) against the topics held so far.
    const result = hub.subscribe(this.#self, topic, options)
    if (this.#subscribed === null) this.#subscribed = new Set()
    this.#subscribed.add(topic)
    if (this.#env === null) return Promise.resolve(result)
    // A client of the envelope learns of a refused resume directly, as a 'gap' frame.
    return Promise.resolve(result).then((r) => {
      if (r.status === 'gap' && this.#conn.readyState === OPEN) {
        this.#conn.sendText(gapFrame({ topic, reason: r.reason, epoch: r.epoch, offset: r.offset }))
      }
      return r
    })
  }

  unsubscribe (topic: string): void {
    const hub = this.#hub(topic)
    if (this.#subscribed === null || !this.#subscribed.delete(topic)) return
    hub.unsubscribe(this.#self, topic)
  }

  isSubscribed (topic: string): boolean {
    return this.#subscribed !== null && this.#subscribed.has(topic)
  }

  #hub (topic: string): TopicHub {
    if (typeof topic !== 'string' || topic.length === 0) throw new FST_WS_INVALID_TOPIC('a topic is a non-empty string')
    if (this.#ctx.topics === null) throw new FST_WS_INVALID_TOPIC('topics are only available on server sockets')
    return this.#ctx.topics
  }

  // ---- async iteration ----
  [Symbol.asyncIterator] (): AsyncIterableIterator<IteratedMessage<Incoming>> {
    this.#iterating = true
    const next = (): Promise<IteratorResult<IteratedMessage<Incoming>>> => {
      let item = this.#takeHeld()
      // Held messages that have an onMessage() handler go to it; the iterator yields the others.
      for (let handler; item !== undefined && (handler = this.#handlerFor(item.data)) !== undefined; item = this.#takeHeld()) {
        this.#dispatch(handler, item.data)
      }
      if (item !== undefined) return Promise.resolve({ value: this.#iterated(item.data, item.isBinary), done: false })
      if (this.#closed || !this.#iterating) return Promise.resolve({ value: undefined, done: true })
      return new Promise((resolve) => { (this.#waiters ??= []).push(resolve) })
    }
    const iterator: AsyncIterableIterator<IteratedMessage<Incoming>> = {
      next,
      return: (): Promise<IteratorResult<IteratedMessage<Incoming>>> => {
        this.#iterating = false
        this.#endWaiters()
        if (this.listenerCount('message') > 0) scheduleFlush(this.#self)
        return Promise.resolve({ value: undefined, done: true })
      },
      [Symbol.asyncIterator]: () => iterator
    }
    return iterator
  }

  /** What the iterator yields for a message: raw text as a string, binary as a Buffer, a decoded message as is. */
  #iterated (data: unknown, isBinary: boolean): IteratedMessage<Incoming> {
    const value = this.#ctx.messages !== null && this.#ctx.messages.validates ? data : isBinary ? data : (data as Buffer).toString()
    return value as IteratedMessage<Incoming>
  }

  // ---- from the connection ----
  #onMessage (data: Buffer, isBinary: boolean): void {
    const codec = this.#ctx.messages
    let message: unknown = data
    if (this.#env !== null) {
      message = this.#fromEnvelope(codec!, data, isBinary)
      if (message === HANDLED) return
    } else if (codec !== null && codec.validates) {
      // Parsed and validated on arrival: an invalid message never reaches a listener, nor the held queue.
      const decoded = codec.decode(data, isBinary)
      if (!decoded.ok) {
        this.#invalid(codec, decoded.reason, decoded.errors, data)
        return
      }
      message = decoded.value
    }
    const conn = this.#conn
    const ready = conn.heldCount === 0 && this.#parked === undefined
    if (this.#handlers !== null && ready) {
      const handler = this.#handlerFor(message)
      if (handler !== undefined) {
        this.#dispatch(handler, message)
        return
      }
    }
    if (this.#iterating) {
      const waiters = this.#waiters
      if (waiters !== null && waiters.length > 0 && ready) {
        waiters.shift()!({ value: this.#iterated(message, isBinary), done: false })
        return
      }
    } else if (ready && this.listenerCount('message') > 0) {
      this.#deliver(message, isBinary)
      return
    } else if (this.#handlers !== null && this.listenerCount('message') === 0) {
      this.#warnUnhandled(message)
    }
    conn.hold(message, isBinary, data.length)
  }

  /** The onMessage() handler of a decoded message's `type`, if there is one: one Map lookup. */
  #handlerFor (message: unknown): AnyMessageHandler | undefined {
    const handlers = this.#handlers
    if (handlers === null || typeof message !== 'object' || message === null) return undefined
    return handlers.get((message as { type?: unknown }).type)
  }

  /** Call an onMessage() handler; it fails like a 'message' listener (throw or rejection: log, close 1011). */
  #dispatch (handler: AnyMessageHandler, message: unknown): void {
    try {
      const result = handler.call(this.#self, message, this.#self)
      if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
        (result as PromiseLike<unknown>).then(undefined, this.#onHandlerRejected ??= (err: unknown) => {
          this.#failFromUser(err, 'message handler rejected')
        })
      }
    } catch (err) {
      this.#failFromUser(err, `'${String((message as { type: unknown }).type)}' message handler threw`)
    }
  }

  /** Once per socket: a message whose type has no onMessage() handler, and no 'message' listener to take it. */
  #warnUnhandled (message: unknown): void {
    if (this.#warnedUnhandled || this.#handlerFor(message) !== undefined) return
    this.#warnedUnhandled = true
    const type = typeof message === 'object' && message !== null ? (message as { type?: unknown }).type : undefined
    this.#log.warn({ type }, 'WebSocket message with no onMessage() handler for its type and no \'message\' listener: held until one consumes it')
  }

  /** Whether messages are held (in the connection's queue, or parked first in line). */
  #holding (): boolean {
    return this.#parked !== undefined || this.#conn.heldCount > 0
  }

  /** The oldest held message: the parked one first. */
  #takeHeld (): HeldMessage | undefined {
    const parked = this.#parked
    if (parked === undefined) return this.#conn.takeHeld()
    this.#parked = undefined
    return parked
  }

  #deliver (message: unknown, isBinary: boolean): void {
    try {
      if (this.#ctx.messages !== null && this.#ctx.messages.validates) emit.call(this, 'message', message)
      else emit.call(this, 'message', message, isBinary)
    } catch (err) {
      this.#failFromUser(err, 'message listener threw')
    }
  }

  /**
   * A message the route's `receive` schema refused. By default the RFC's answer: close with 1007 (1003 for a
   * binary frame, a type of data the route does not accept), reported as an 'error' (logged when nobody listens).
   * With `onInvalid: 'emit'` the socket stays open and 'invalid' carries the errors.
   */
  /** An inbound envelope: a message to deliver (its validated content), or HANDLED (requests, replies, probes...). */
  #fromEnvelope (codec: MessageCodecLike, data: Buffer, isBinary: boolean): unknown {
    if (isBinary) {
      this.#invalid(codec, 'binary', null, data)
      return HANDLED
    }
    let frame: unknown
    try {
      frame = JSON.parse(data.toString())
    } catch (err) {
      this.#invalid(codec, 'json', (err as Error).message, data)
      return HANDLED
    }
    const env = this.#env!
    const inbound = classify(frame, MAX_RESUME_TOPICS)
    if (inbound.kind !== 'resume' && env.positions === null) this.#setPositions(EMPTY_POSITIONS)
    switch (inbound.kind) {
      case 'message': {
        const checked = codec.check(inbound.value)
        if (checked.ok) return checked.value
        this.#invalid(codec, checked.reason, checked.errors, data)
        return HANDLED
      }
      case 'request': {
        const checked = codec.check(inbound.value)
        if (!checked.ok) this.#conn.sendText(replyErrorFrame(inbound.id, 'invalid'))
        else if (env.onRequest !== null) this.#runRequest(inbound.id, checked.value)
        else if (env.waitingRequests.length < MAX_PENDING_REQUESTS) env.waitingRequests.push({ id: inbound.id, value: checked.value })
        else this.#conn.sendText(replyErrorFrame(inbound.id, 'no-handler'))
        return HANDLED
      }
      case 'reply': {
        const pending = env.pending.get(inbound.id)
        if (pending === undefined) return HANDLED // late (timed out) or unknown: nobody waits for it
        env.pending.delete(inbound.id)
        clearTimeout(pending.timer)
        if (inbound.error !== undefined) {
          pending.reject(new FST_WS_REQUEST_FAILED(inbound.error))
          return HANDLED
        }
        const checked = codec.check(inbound.value)
        if (checked.ok) pending.resolve(checked.value)
        else pending.reject(new FST_WS_REQUEST_FAILED('invalid reply'))
        return HANDLED
      }
      case 'resume':
        this.#setPositions(inbound.positions)
        return HANDLED
      case 'probe':
        this.#conn.sendText(probeAnswer(inbound.n))
        return HANDLED
      default:
        this.#invalid(codec, 'schema', inbound.why, data)
        return HANDLED
    }
  }

  #setPositions (positions: ReadonlyMap<string, TopicPosition>): void {
    const env = this.#env!
    if (env.positions === null) env.positions = positions
    if (env.positionTimer !== null) clearTimeout(env.positionTimer)
    env.positionTimer = null
    const waiters = env.positionWaiters
    env.positionWaiters = []
    for (const resolve of waiters) resolve(env.positions)
  }

  /** Run the request handler for one validated request and send its reply (or "failed"). */
  #runRequest (id: number, value: unknown): void {
    const env = this.#env!
    let result: unknown
    try {
      result = env.onRequest!.call(this.#self, value, this.#self)
    } catch (err) {
      this.#replyFailed(id, err)
      return
    }
    if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<unknown>).then((reply) => { this.#reply(id, reply) }, (err: unknown) => { this.#replyFailed(id, err) })
    } else {
      this.#reply(id, result)
    }
  }

  #reply (id: number, reply: unknown): void {
    if (this.#conn.readyState !== OPEN) return
    let json: string
    try {
      json = this.#ctx.messages!.encode(reply)
    } catch (err) {
      this.#replyFailed(id, err)
      return
    }
    this.#conn.sendText(replyFrame(id, json))
  }

  #replyFailed (id: number, err: unknown): void {
    this.#log.error({ err }, 'WebSocket request handler failed; answered "failed"')
    if (this.#conn.readyState === OPEN) this.#conn.sendText(replyErrorFrame(id, 'failed'))
  }

  /** The socket closed: what waits for the peer is settled. */
  #endEnvelope (): void {
    const env = this.#env
    if (env === null) return
    for (const p of env.pending.values()) {
      clearTimeout(p.timer)
      p.reject(new FST_WS_REQUEST_CLOSED())
    }
    env.pending.clear()
    env.waitingRequests = []
    if (env.positions === null) this.#setPositions(EMPTY_POSITIONS)
  }

  #invalid (codec: MessageCodecLike, reason: 'binary' | 'json' | 'schema', errors: unknown, data: Buffer): void {
    const what = reason === 'binary' ? 'binary frame on a JSON route' : reason === 'json' ? 'not JSON' : 'does not match the schema'
    const err = Object.assign(new FST_WS_INVALID_MESSAGE(what), { reason, validation: errors, data: Buffer.from(data) }) as InvalidMessageError
    if (codec.onInvalid === 'emit') {
      if (this.listenerCount('invalid') > 0) {
        try {
          emit.call(this, 'invalid', err)
        } catch (listenerErr) {
          this.#failFromUser(listenerErr, 'invalid listener threw')
        }
      } else {
        this.#log.warn({ err }, 'WebSocket message refused by the route schema (no \'invalid\' listener)')
      }
      return
    }
    if (this.#conn.readyState !== OPEN) return
    const closeCode = reason === 'binary' ? 1003 : 1007
    err.closeCode = closeCode
    this.#onError(err as InvalidMessageError & { closeCode: number })
    this.#conn.close(closeCode, reason === 'schema' ? 'Invalid message' : reason === 'json' ? 'Invalid JSON' : 'Binary messages are not accepted')
  }

  #flushHeld (): void {
    // While iterating, the iterator takes held messages (and hands those with a handler to it).
    while (!this.#iterating) {
      const item = this.#takeHeld()
      if (item === undefined) return
      const handler = this.#handlerFor(item.data)
      if (handler !== undefined) this.#dispatch(handler, item.data)
      else if (this.listenerCount('message') > 0) this.#deliver(item.data, item.isBinary)
      else {
        // Nobody for this one yet: it stays first in line.
        this.#parked = item
        if (this.#handlers !== null) this.#warnUnhandled(item.data)
        return
      }
    }
  }

  /**
   * An event other than 'message' and 'error': every listener is called, in order, even when one before it
   * throws or rejects (each failure is reported on its own), so one faulty listener cannot keep the others
   * (the application's bookkeeping, a test's assertions) from hearing of a close.
   */
  #emitSafely (event: 'ping' | 'pong' | 'drain' | 'close' | 'topicGap', ...args: [Buffer] | [] | [number, string] | [TopicGap]): void {
    const listeners = this.rawListeners(event) as Array<(...a: unknown[]) => unknown>
    for (let i = 0; i < listeners.length; i++) {
      try {
        const result = listeners[i]!.apply(this, args)
        if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
          (result as Promise<unknown>).then(undefined, (err: unknown) => this.#failFromUser(err, `${event} listener rejected`))
        }
      } catch (err) {
        this.#failFromUser(err, `${event} listener threw`)
      }
    }
  }

  /** A handler or listener failed: log it and close with 1011 (Internal Error). */
  #failFromUser (err: unknown, what: string): void {
    this.#log.error({ err }, `WebSocket ${what}; closing with 1011`)
    if (this.#conn.readyState === OPEN) this.#conn.close(1011, '')
  }

  /** An error with no listener is logged, never thrown. */
  #onError (err: ClosingError): void {
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', err)
      } catch (listenerErr) {
        this.#log.error({ err: listenerErr }, 'WebSocket error listener threw')
      }
    } else {
      this.#log.warn({ err }, 'WebSocket connection failed')
    }
  }

  #onClose (code: number, reason: string): void {
    this.#closed = true
    this.#endEnvelope()
    if (this.#ctx.release !== null) this.#ctx.release(this.#self)
    const topics = this.#subscribed
    const hub = this.#ctx.topics
    if (topics !== null && hub !== null) {
      this.#subscribed = null
      for (const topic of topics) {
        // A broker that fails (a custom one, a lost connection) must not stop the others nor the close.
        try {
          hub.unsubscribe(this.#self, topic)
        } catch (err) {
          this.#log.error({ err, topic }, 'WebSocket topic broker failed to unsubscribe a closed socket')
        }
      }
    }
    if (!this.#holding()) this.#endWaiters()
    this.#emitSafely('close', code, reason)
  }

  /** Settle every pending next() as done. */
  #endWaiters (): void {
    const waiters = this.#waiters
    if (waiters === null) return
    this.#waiters = null
    for (const waiter of waiters) waiter({ value: undefined, done: true })
  }
}

// A listener that returns a rejected promise (captureRejections) fails like one that throws. On the prototype
// rather than in the class body, so that the published type does not carry it.
Object.defineProperty(WebSocket.prototype, captureRejectionSymbol, {
  value: function onListenerRejected (this: WebSocket, err: unknown, event: string | symbol): void {
    failUser(this, err, `${String(event)} listener rejected`)
  }
})

function scheduleFlush (ws: WebSocket): void {
  if (holding(ws)) queueMicrotask(() => flushHeldOf(ws))
}

// ---- the plugin's side of the socket (not re-exported by the package) ----

/** Create a socket over an upgraded stream. It does not read until startWebSocket(). */
export function openWebSocket<P extends string> (
  socket: Duplex, options: ConnectionOptions, protocol: P | '', extensions: string, ctx: SocketContext, log: SocketLog
): WebSocket<P> {
  return create(socket, options, protocol, extensions, ctx, log) as WebSocket<P>
}

/** Start reading; `head` holds bytes that arrived with the handshake (parsed at once, not kept). */
export function startWebSocket (ws: WebSocket<string>, head: Buffer | null): void {
  connectionOf(ws as WebSocket).start(head)
}

/** A handler or listener outside the socket failed: log and close with 1011. */
export function failFromUser (ws: WebSocket<string>, err: unknown, what: string): void {
  failUser(ws as WebSocket, err, what)
}

/** Tell a socket's 'topicGap' listeners (a listener that throws closes the socket with 1011, as for any event). */
export function emitTopicGap (ws: WebSocket<string>, gap: TopicGap): void {
  emitGap(ws as WebSocket, gap)
}

/** Whether a socket speaks the `fastify-rfc6455.v1` envelope (its topic messages then go in the JSON envelope). */
export function speaksEnvelope (ws: WebSocket<string>): boolean {
  return envelopeOf(ws as WebSocket)
}

/** Write an already framed message (topic fan-out). Returns false when the socket is not open. */
export function writeFrame (ws: WebSocket<string>, frame: Buffer): boolean {
  return connectionOf(ws as WebSocket).writeFrame(frame)
}
