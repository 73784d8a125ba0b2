/**
 * The client of the `fastify-rfc6455.v1` envelope (README "Client"): reconnect with capped, fully jittered
 * backoff, a bounded outbox, liveness probes that do not wake a hidden page, topic resume, and requests with
 * replies in both directions. Runs unbundled in a browser page (it imports nothing: it uses the page's
 * WebSocket), and in Node on the global WebSocket when there is one, else on the plugin's own engine in the
 * client role (./node-transport.js, loaded on demand).
 *
 * The hot path (a message in, a message out) allocates nothing of its own beyond the JSON text.
 */

/** The subprotocol the client offers and requires: the envelope's wire format, version 1. */
export const SUBPROTOCOL = 'fastify-rfc6455.v1'

/**
 * What flows on a connection, from the client's side: `send`, what the client sends (messages and requests);
 * `receive`, what the server sends (messages, topic data and its requests). Replies default to the type of their
 * direction: `serverReply` (the server's reply to `request()`, default `receive`), `clientReply` (what an
 * `onRequest()` handler returns, default `send`).
 */
export interface ClientContract {
  send: unknown
  receive: unknown
  serverReply?: unknown
  clientReply?: unknown
}

/** Untyped: anything JSON goes both ways. */
export interface DefaultContract { send: unknown, receive: unknown }

/**
 * The client's contract from a route's message types, as the server names them (`Incoming`: what the route
 * receives, its `messages.receive` schema; `Outgoing`: what it sends, its `messages.send` schema).
 */
export interface ServerContract<Incoming, Outgoing> { send: Incoming, receive: Outgoing }

/**
 * The client's contract from the type of the route's server socket (its `request()` sends what the route sends
 * and resolves with what it receives), e.g. `connect<ContractOf<ChatSocket>>(url)`.
 */
export type ContractOf<Socket> = Socket extends { request (message: infer Outgoing, ...rest: never[]): Promise<infer Incoming> }
  ? ServerContract<Incoming, Outgoing>
  : never

export type SendOf<C extends ClientContract> = C['send']
export type ReceiveOf<C extends ClientContract> = C['receive']
export type ServerReplyOf<C extends ClientContract> = C extends { serverReply: infer R } ? R : C['receive']
export type ClientReplyOf<C extends ClientContract> = C extends { clientReply: infer R } ? R : C['send']

/** A position in a topic: the last message received is `offset` within `epoch`. */
export interface Position { epoch: string, offset: number }

/** Where a topic message came from (the second argument of a 'message' listener; undefined for a plain message). */
export interface TopicInfo extends Position { topic: string }

/** The server says messages of `topic` may be lost; delivery goes on after `offset`. */
export interface Gap extends TopicInfo {
  reason: 'epoch-changed' | 'history-expired' | 'unknown-position' | 'broker-unavailable'
}

/** Why the client stopped for good. */
export type StopReason =
  | { reason: 'closed' }
  | { reason: 'close-code', code: number, message: string }
  | { reason: 'handshake-refused', status: number }
  | { reason: 'max-attempts', attempts: number }
  | { reason: 'subprotocol', protocol: string }
  | { reason: 'no-transport', error: unknown }

export interface ClientEvents<C extends ClientContract> {
  /** Connected (after the resume frame and the outbox were sent). */
  open: []
  /** A message from the server; `topic` tells where a topic message came from. */
  message: [message: ReceiveOf<C>, topic: TopicInfo | undefined]
  /** A connection that was open closed (abandoned by the liveness check or connect timeout: 1006). */
  close: [code: number, reason: string]
  gap: [gap: Gap]
  stopped: [why: StopReason]
  /** A message left the full outbox unsent (a request's promise rejects with OutboxFullError). */
  drop: [message: SendOf<C>]
  /** The next connection attempt (1, 2, ...) starts in `delay` ms. */
  reconnecting: [attempt: number, delay: number]
  /** A listener or request handler threw, or the server sent a frame that is not the envelope. */
  error: [error: unknown]
}

/** A reply the peer could not give: 'invalid' (its schema refused the request), 'no-handler', 'failed'. */
export type FailureCode = 'invalid' | 'no-handler' | 'failed'

export class ClientError extends Error {
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.code = code
    this.name = new.target.name
  }
}
/** No reply within the request's timeout. */
export class RequestTimeoutError extends ClientError {
  constructor (ms: number) { super('FST_WS_REQUEST_TIMEOUT', `No reply within ${ms} ms`) }
}
/** The connection dropped after the request was sent: whether the peer acted on it is unknown. */
export class ConnectionClosedError extends ClientError {
  constructor () { super('FST_WS_REQUEST_CLOSED', 'The connection closed before the reply') }
}
/** The peer answered that it could not reply. */
export class RequestFailedError extends ClientError {
  readonly reason: FailureCode
  constructor (reason: FailureCode) {
    super('FST_WS_REQUEST_FAILED', `The request failed: ${reason}`)
    this.reason = reason
  }
}
/** The outbox is full (policy 'throw'; with the drop policies, the request that was dropped). */
export class OutboxFullError extends ClientError {
  constructor () { super('FST_WS_OUTBOX_FULL', 'The outbox is full') }
}
/** The client is stopped (close(), or a stop reason): nothing more is sent. */
export class ClientClosedError extends ClientError {
  constructor () { super('FST_WS_CLIENT_CLOSED', 'The client is stopped') }
}

/** The part of the WHATWG WebSocket the client uses. */
export interface WebSocketLike {
  readonly protocol: string
  onopen: ((ev: unknown) => void) | null
  onmessage: ((ev: { data: unknown }) => void) | null
  onclose: ((ev: { code: number, reason: string, status?: number }) => void) | null
  onerror: ((ev: unknown) => void) | null
  send (data: string): void
  close (code?: number, reason?: string): void
}
export type WebSocketConstructor = new (url: string, protocols: string, options?: { headers?: Record<string, string>, ca?: string | readonly string[] }) => WebSocketLike

export interface Clock {
  now (): number
  setTimeout (fn: () => void, ms: number): unknown
  clearTimeout (handle: unknown): void
}

export interface ConnectOptions {
  /** Backoff, or false to never reconnect. */
  reconnect?: false | {
    /** First delay bound (ms). Default 500. */
    base?: number
    /** Largest delay bound (ms). Default 30,000. */
    cap?: number
    /** Attempts after a drop before stopping ('max-attempts'). Default Infinity. */
    maxAttempts?: number
    /** A connection open this long resets the attempt count (ms). Default 5,000. */
    stableAfter?: number
  }
  /**
   * Whether to reconnect after a close with `code` (`status`: the HTTP status of a refused handshake, seen by the
   * Node transport only); undefined for the default rule: not after 1002, 1003, 1007-1010, 4000-4999 or a 4xx.
   */
  retry?: (code: number, reason: string, status: number | undefined) => boolean | undefined
  /** Give up on a connection attempt not open after this long (ms; 0: never). Default 10,000. */
  connectTimeout?: number
  /** Messages kept while disconnected. Default 100; policy when full: default 'drop-oldest'. */
  outbox?: { size?: number, policy?: 'drop-oldest' | 'drop-newest' | 'throw' }
  /** Probe after `idle` ms without an inbound frame (default 25,000), dead after `timeout` more (default 10,000). */
  liveness?: false | { idle?: number, timeout?: number }
  /** Default timeout of request() (ms). Default 10,000. */
  requestTimeout?: number
  /** Topic positions to resume from (saved from `client.positions`). */
  positions?: Record<string, Position>
  /** Extra handshake headers (the Node transport only: browsers cannot set them). */
  headers?: Record<string, string>
  /** Certificates (PEM) to trust for wss:, beside the default ones (the Node transport only). */
  ca?: string | readonly string[]
  /**
   * The WebSocket implementation. Default: globalThis.WebSocket, else (Node without one) the plugin's own engine,
   * which 'node' selects even where there is a global one (it sees the status of a refused handshake).
   */
  WebSocket?: WebSocketConstructor | 'node'
  /** For tests: a number in [0, 1) (default Math.random) and the timers. */
  random?: () => number
  clock?: Clock
}

interface Pending { resolve (value: unknown): void, reject (err: Error): void, timer: unknown, sent: boolean }
interface Queued { frame: string, message: unknown, id: number }
type Listener = (this: unknown, a?: unknown, b?: unknown) => void

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as Parameters<typeof clearTimeout>[0])
}

interface Host {
  WebSocket?: WebSocketConstructor
  document?: { visibilityState?: string, addEventListener (e: string, l: () => void): void, removeEventListener (e: string, l: () => void): void }
  addEventListener? (e: string, l: () => void): void
  removeEventListener? (e: string, l: () => void): void
  location?: { href: string }
}
const host = globalThis as Host

function positive (value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !(value >= 0)) throw new ClientError('FST_WS_CLIENT_OPTION', `Expected a number ≥ 0, got ${String(value)}`)
  return value
}

const json = (value: unknown): string => JSON.stringify(value) ?? 'null'

/** The default rule: the server closed for a reason another attempt will not fix. */
const fatal = (code: number): boolean => (code >= 1002 && code <= 1010 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 4000 && code < 5000)

export class Client<C extends ClientContract = DefaultContract> {
  readonly url: string
  #o: ConnectOptions
  #clock: Clock
  #Ctor: WebSocketConstructor | undefined
  #ws: WebSocketLike | null = null
  #state: 'connecting' | 'open' | 'waiting' | 'stopped' = 'connecting'
  #listeners: Record<string, Listener[]> = {}
  #handler: ((message: ReceiveOf<C>) => unknown) | null = null
  #outbox: Queued[] = []
  #pending = new Map<number, Pending>()
  #positions = new Map<string, Position>()
  #nextId = 0
  #attempts = 0
  #openedAt = -1
  #lastIn = 0
  #timer: unknown = null
  #probeTimer: unknown = null
  #probing = false
  #probes = 0
  #base: number; #cap: number; #max: number; #stable: number
  #size: number; #idle: number; #dead: number; #connectTimeout: number; #requestTimeout: number

  constructor (url: string | URL, options: ConnectOptions = {}) {
    const u = new URL(url, host.location?.href)
    u.protocol = u.protocol.replace('http', 'ws')
    this.url = u.href
    this.#o = options
    this.#clock = options.clock ?? realClock
    this.#Ctor = options.WebSocket === 'node' ? undefined : options.WebSocket ?? host.WebSocket
    const r = options.reconnect
    this.#base = positive(r ? r.base : undefined, 500)
    this.#cap = positive(r ? r.cap : undefined, 30_000)
    this.#max = r === false ? 0 : positive(r?.maxAttempts, Infinity)
    this.#stable = positive(r ? r.stableAfter : undefined, 5000)
    this.#size = positive(options.outbox?.size, 100)
    const l = options.liveness
    this.#idle = l === false ? 0 : positive(l?.idle, 25_000)
    this.#dead = positive(l ? l.timeout : undefined, 10_000)
    this.#connectTimeout = positive(options.connectTimeout, 10_000)
    this.#requestTimeout = positive(options.requestTimeout, 10_000)
    const policy = options.outbox?.policy
    if (policy !== undefined && policy !== 'drop-oldest' && policy !== 'drop-newest' && policy !== 'throw') {
      throw new ClientError('FST_WS_CLIENT_OPTION', `Unknown outbox policy ${String(policy)}`)
    }
    for (const [topic, p] of Object.entries(options.positions ?? {})) this.#positions.set(topic, { epoch: p.epoch, offset: p.offset })
    host.document?.addEventListener('visibilitychange', this.#wake)
    host.addEventListener?.('online', this.#wake)
    queueMicrotask(() => this.#open()) // after the caller attached its listeners
  }

  /** 'connecting', 'open', 'waiting' (for the next attempt) or 'stopped'. */
  get state (): 'connecting' | 'open' | 'waiting' | 'stopped' { return this.#state }

  /** The last position received per topic (save it to resume in a later page). */
  get positions (): Record<string, Position> { return Object.fromEntries(this.#positions) }

  on<E extends keyof ClientEvents<C>> (event: E, listener: (...args: ClientEvents<C>[E]) => void): this {
    this.#listeners[event] = [...(this.#listeners[event] ?? []), listener as Listener]
    return this
  }

  off<E extends keyof ClientEvents<C>> (event: E, listener: (...args: ClientEvents<C>[E]) => void): this {
    this.#listeners[event] = (this.#listeners[event] ?? []).filter((l) => l !== listener)
    return this
  }

  /** Answer the server's requests: the return value (or what its promise resolves to) is the reply. */
  onRequest (handler: ((message: ReceiveOf<C>) => ClientReplyOf<C> | Promise<ClientReplyOf<C>>) | null): this {
    this.#handler = handler
    return this
  }

  /** Send a message; while disconnected it waits in the outbox. Throws OutboxFullError (policy 'throw'). */
  send (message: SendOf<C>): void {
    this.#write('{"m":' + json(message) + '}', message, 0)
  }

  /** Send a request; resolves with the server's reply. */
  request (message: SendOf<C>, options?: { timeout?: number }): Promise<ServerReplyOf<C>> {
    return new Promise((resolve, reject) => {
      const id = ++this.#nextId
      const ms = positive(options?.timeout, this.#requestTimeout)
      const p: Pending = { resolve: resolve as (v: unknown) => void, reject, sent: false, timer: null }
      p.timer = this.#clock.setTimeout(() => {
        this.#pending.delete(id)
        const i = this.#outbox.findIndex((q) => q.id === id)
        if (i >= 0) this.#outbox.splice(i, 1)
        reject(new RequestTimeoutError(ms))
      }, ms)
      this.#pending.set(id, p)
      try {
        this.#write('{"q":' + id + ',"m":' + json(message) + '}', message, id)
      } catch (err) {
        this.#settle(id, err as Error)
      }
    })
  }

  /** Stop: close the connection (code 1000 or 3000-4999), reconnect no more, fail what waits. */
  close (code = 1000, reason = ''): void {
    if ((code !== 1000 && !(Number.isInteger(code) && code >= 3000 && code <= 4999)) || new TextEncoder().encode(reason).length > 123) {
      throw new ClientError('FST_WS_CLIENT_OPTION', 'A client closes with 1000 or 3000-4999 and a reason of at most 123 bytes')
    }
    if (this.#state === 'stopped') return
    const ws = this.#ws
    this.#stop({ reason: 'closed' })
    ws?.close(code, reason)
  }

  #emit (event: keyof ClientEvents<C>, a?: unknown, b?: unknown): void {
    const listeners = this.#listeners[event]
    if (listeners === undefined) return
    for (const l of listeners) {
      try {
        l.call(this, a, b)
      } catch (err) {
        if (event !== 'error' && this.#listeners.error?.length) this.#emit('error', err)
        else console.error(err)
      }
    }
  }

  #write (frame: string, message: unknown, id: number): void {
    if (this.#state === 'stopped') throw new ClientClosedError()
    if (this.#state === 'open') {
      this.#ws!.send(frame)
      const p = this.#pending.get(id)
      if (p !== undefined) p.sent = true
      return
    }
    const outbox = this.#outbox
    const entry: Queued = { frame, message, id }
    if (outbox.length >= this.#size) {
      const policy = this.#o.outbox?.policy
      if (policy === 'throw') throw new OutboxFullError()
      const dropped = policy === 'drop-newest' || outbox.length === 0 ? entry : outbox.shift()!
      if (dropped !== entry) outbox.push(entry)
      this.#settle(dropped.id, new OutboxFullError())
      this.#emit('drop', dropped.message)
      return
    }
    outbox.push(entry)
  }

  /** Reject request `id` (if it still waits) with `err`. */
  #settle (id: number, err: Error): void {
    const p = this.#pending.get(id)
    if (p === undefined) return
    this.#pending.delete(id)
    this.#clock.clearTimeout(p.timer)
    p.reject(err)
  }

  #open (): void {
    if (this.#state === 'stopped') return
    this.#state = 'connecting'
    const Ctor = this.#Ctor
    if (Ctor === undefined) {
      import('./node-transport.js').then((m) => {
        this.#Ctor = m.NodeWebSocket
        if (this.#state === 'connecting') this.#open()
      }, (error: unknown) => this.#stop({ reason: 'no-transport', error }))
      return
    }
    let ws: WebSocketLike
    try {
      ws = new Ctor(this.url, SUBPROTOCOL, this.#o)
    } catch (error) {
      this.#stop({ reason: 'no-transport', error })
      return
    }
    this.#ws = ws
    this.#openedAt = -1
    this.#arm(this.#connectTimeout || Infinity, this.#abandon)
    ws.onopen = () => {
      if (ws.protocol !== SUBPROTOCOL) {
        this.#stop({ reason: 'subprotocol', protocol: ws.protocol })
        ws.close(1000)
        return
      }
      this.#state = 'open'
      this.#openedAt = this.#lastIn = this.#clock.now()
      ws.send(json({ resume: this.positions })) // first, always ({} when none): the server waits for it
      const queued = this.#outbox
      this.#outbox = []
      for (const q of queued) this.#write(q.frame, q.message, q.id)
      this.#arm(this.#idle || Infinity, this.#check)
      this.#emit('open')
    }
    ws.onmessage = (ev) => this.#receive(ev.data)
    ws.onclose = (ev) => this.#closed(ev.code, ev.reason, ev.status)
    ws.onerror = null
  }

  /** One timer at a time: the connect timeout, the idle check, or the next attempt. */
  #arm (ms: number, fn?: () => void): void {
    this.#clock.clearTimeout(this.#timer)
    this.#timer = fn !== undefined && ms < Infinity ? this.#clock.setTimeout(fn, ms) : null
  }

  #receive (data: unknown): void {
    this.#lastIn = this.#clock.now()
    if (typeof data !== 'string') return
    let f: Record<string, unknown>
    try {
      f = JSON.parse(data)
      if (typeof f !== 'object' || f === null) throw new TypeError('Not an object')
    } catch (err) {
      this.#emit('error', err)
      return
    }
    if (typeof f.topic === 'string') {
      const info = f as unknown as TopicInfo
      const last = this.#positions.get(info.topic)
      if (last !== undefined && last.epoch === info.epoch) {
        if (info.offset <= last.offset) return // already delivered (a resume that overlapped)
        last.offset = info.offset
      } else {
        this.#positions.set(info.topic, { epoch: info.epoch, offset: info.offset })
      }
      this.#emit('message', f.data, f)
    } else if (typeof f.q === 'number') {
      this.#answer(f.q, f.m)
    } else if (typeof f.r === 'number') {
      const p = this.#pending.get(f.r)
      if (p === undefined) return // timed out already
      if (f.e !== undefined) return this.#settle(f.r, new RequestFailedError(f.e as FailureCode))
      this.#pending.delete(f.r)
      this.#clock.clearTimeout(p.timer)
      p.resolve(f.m)
    } else if ('m' in f) {
      this.#emit('message', f.m)
    } else if (f.gap !== undefined) {
      const gap = f.gap as Gap
      // Nothing before the gap can be told apart from what was seen: what follows it (a fresh replay the server
      // may send at once, or live messages) is taken as new, and the next message sets the position again.
      this.#positions.delete(gap.topic)
      this.#emit('gap', gap)
    } // {"P": n}: the probe's answer; that a frame arrived is all that counts
  }

  #answer (id: number, message: unknown): void {
    const ws = this.#ws!
    const reply = (frame: string): void => {
      if (this.#ws === ws && this.#state === 'open') ws.send(frame)
    }
    const handler = this.#handler
    if (handler === null) return reply('{"r":' + id + ',"e":"no-handler"}')
    const failed = (err: unknown): void => {
      reply('{"r":' + id + ',"e":"failed"}')
      this.#emit('error', err)
    }
    try {
      Promise.resolve(handler(message as ReceiveOf<C>)).then((value) => reply('{"r":' + id + ',"m":' + json(value) + '}')).catch(failed)
    } catch (err) {
      failed(err)
    }
  }

  // ---- liveness: probe only after `idle` ms of silence, never while the page is hidden ----

  readonly #check = (): void => {
    const quiet = this.#clock.now() - this.#lastIn
    if (quiet < this.#idle) return this.#arm(this.#idle - quiet, this.#check)
    if (host.document?.visibilityState !== 'hidden') this.#probe()
  }

  #probe (): void {
    if (this.#state !== 'open' || this.#probing || this.#idle === 0) return
    this.#probing = true
    this.#lastIn = -1
    this.#ws!.send('{"p":' + ++this.#probes + '}')
    this.#probeTimer = this.#clock.setTimeout(this.#verify, this.#dead)
  }

  readonly #verify = (): void => {
    const alive = this.#lastIn >= 0 // a frame arrived since the probe
    this.#probing = false
    if (!alive) return this.#abandon()
    this.#check()
  }

  /** The page became visible, or the network came back: probe now, or try now instead of waiting. */
  readonly #wake = (): void => {
    if (host.document?.visibilityState === 'hidden') return
    if (this.#state === 'open') this.#probe()
    else if (this.#state === 'waiting') this.#open()
  }

  /** A connection that does not answer: drop it without waiting for its close handshake. */
  readonly #abandon = (): void => {
    const ws = this.#ws
    if (ws === null) return
    ws.onopen = ws.onmessage = ws.onclose = null
    ws.onerror = () => {}
    try { ws.close() } catch {}
    this.#closed(1006, this.#state === 'open' ? 'No answer to the liveness probe' : 'Connect timeout')
  }

  #closed (code: number, reason: string, status?: number): void {
    const wasOpen = this.#openedAt >= 0
    const now = this.#clock.now()
    this.#ws = null
    this.#clock.clearTimeout(this.#probeTimer)
    this.#probing = false
    for (const [id, p] of this.#pending) if (p.sent) this.#settle(id, new ConnectionClosedError())
    if (this.#state !== 'stopped') {
      this.#arm(0)
      this.#state = 'waiting'
    }
    if (wasOpen) this.#emit('close', code, reason)
    if (this.#state === 'stopped') return
    if (wasOpen && now - this.#openedAt >= this.#stable) this.#attempts = 0
    let retry: boolean | undefined
    try {
      retry = this.#o.retry?.(code, reason, status)
    } catch (err) {
      this.#emit('error', err)
    }
    if (retry !== true) {
      if (status !== undefined && status >= 400 && status < 500) return this.#stop({ reason: 'handshake-refused', status })
      if (retry === false || fatal(code)) return this.#stop({ reason: 'close-code', code, message: reason })
    }
    const attempt = ++this.#attempts
    if (attempt > this.#max) return this.#stop({ reason: 'max-attempts', attempts: attempt - 1 })
    const delay = Math.floor((this.#o.random ?? Math.random)() * Math.min(this.#cap, this.#base * 2 ** (attempt - 1)))
    this.#emit('reconnecting', attempt, delay)
    if (this.#state === 'waiting') this.#arm(delay, () => this.#open())
  }

  #stop (why: StopReason): void {
    if (this.#state === 'stopped') return
    this.#state = 'stopped'
    this.#arm(0)
    this.#clock.clearTimeout(this.#probeTimer)
    host.document?.removeEventListener('visibilitychange', this.#wake)
    host.removeEventListener?.('online', this.#wake)
    for (const [id, p] of this.#pending) this.#settle(id, p.sent ? new ConnectionClosedError() : new ClientClosedError())
    this.#outbox = []
    this.#emit('stopped', why)
  }
}

/** Connect to `url` (ws:, wss:, http:, https:, or a path relative to the page) and keep connected. */
export function connect<C extends ClientContract = DefaultContract> (url: string | URL, options?: ConnectOptions): Client<C> {
  return new Client<C>(url, options)
}
