/**
 * Topics shared by every instance on one Redis (or Redis Cluster): `new RedisTopics({ client })` as the plugin's
 * `topics` option.
 *
 * - Order: a publish runs one Lua script that takes the topic's next offset, appends to its history stream and
 *   publishes, atomically (scripts.ts); every instance receives the topic's messages in offset order, the
 *   publishing instance included (its own subscribers get the message through Redis too, not before).
 * - Each instance holds one Redis subscription per topic, only while it has local subscribers, and frames each
 *   message once for all of them (LocalTopic).
 * - Gaps: an instance knows the last offset it delivered per topic. A message whose offset skips ahead, or a
 *   reconnection to Redis, makes it read the missed messages from the history before going on (live messages
 *   wait meanwhile, duplicates are dropped by offset); what the history no longer holds, or an epoch change
 *   (Redis lost the topic's state), is told to each subscriber as a 'topicGap' event.
 * - Resume: `subscribe(topic, { since })` replays from the history, then goes live, per socket.
 * - Counts: each instance writes its subscriber count per topic with an expiry (Redis's clock), refreshed while
 *   it lives; a killed instance's share disappears after `presenceTtl`.
 */
import { randomBytes } from 'node:crypto'
import { LocalTopic } from '../local-topic.js'
import { isTopicEnvelope, type TopicEnvelope } from '../envelope.js'
import { checkHistoryLimits, count } from '../broker-options.js'
import type { HistoryLimits } from '../history.js'
import { emitTopicGap, type WebSocket } from '../../socket/websocket.js'
import { FST_WS_BROKER_TIMEOUT, FST_WS_BROKER_UNAVAILABLE, FST_WS_INVALID_BROKER_OPTION } from '../../errors.js'
import type {
  BrokerContext, PublishResult, SubscribeOptions, SubscribeResult, SubscriberCounts, TopicBroker, TopicGapReason, TopicPosition
} from '../types.js'
import { Script, subscriberOf, asEmitter, type RedisClient, type Subscriber } from './client.js'
import { PRESENCE, PUBLISH, RECOVER } from './scripts.js'
import { decodeHistory, decodeLive, decodeRange, type WireMessage } from './wire.js'

export type { RedisClient } from './client.js'

export interface RedisTopicsOptions {
  /** The app's ioredis `Redis` or `Cluster` client. The broker opens one more connection with its `duplicate()`. */
  client: RedisClient
  /** Prefix of every key and channel. Default 'ws:'. */
  prefix?: string
  /** Per-topic history for resuming and for filling gaps. Default `{ size: 100, ttl: 300_000 }`; size 0 turns it off. */
  history?: Partial<HistoryLimits>
  /** How long a topic's epoch and offset outlive its last publish, in ms. Default 86_400_000 (a day). */
  epochTtl?: number
  /** How topic messages are framed (see TopicEnvelope). Default 'none'. */
  envelope?: TopicEnvelope
  /** A publish Redis has not confirmed by then rejects with FST_WS_BROKER_TIMEOUT. Default 5000 ms. */
  publishTimeout?: number
  /** How long an instance's subscriber counts outlive it (if it dies without closing), in ms. Default 15_000. */
  presenceTtl?: number
}

const SILENT_LOG: BrokerContext['log'] = { warn () {}, error () {}, info () {} }
const RETRY_MS = 1000
/** Live messages a topic holds while it reads missed ones from the history: past either bound they are dropped and read back. */
const MAX_QUEUED = 10_000
const MAX_QUEUED_BYTES = 8 * 1024 * 1024
/** Publishes waiting for Redis (unsent, or sent and unanswered) at most; past it publish() rejects at once. */
const MAX_UNSETTLED = 10_000
/** How often changed subscriber counts are written to Redis (subscriberCounts() on this instance flushes first). */
const PRESENCE_FLUSH_MS = 100

interface Joining {
  socket: WebSocket
  since: TopicPosition | 'history' | undefined
  resolve: (result: SubscribeResult) => void
}

/** One topic this instance subscribes to. */
class RedisTopic {
  readonly local: LocalTopic
  readonly channel: string
  readonly keys: readonly [string, string]
  readonly presenceKey: string
  epoch = ''
  last = 0
  /** The position is known and messages flow to the local sockets. */
  ready = false
  /** A history read is in flight (first sync, a gap, a reconnection): live messages wait in `queue`. */
  syncing = true
  queue: WireMessage[] = []
  queuedBytes = 0
  /** Sockets waiting for the first sync. */
  joining: Joining[] = []
  /** Removed (no local subscriber left): late replies are ignored. */
  dead = false
  /** A sync failed (Redis unreachable): retried by a timer. */
  retry: NodeJS.Timeout | null = null
  /** Resubscribed while a read was in flight: that read may predate the subscription, so read once more. */
  refill = false

  constructor (name: string, base: string) {
    this.local = new LocalTopic(name)
    this.channel = base
    this.keys = [base + ':m', base + ':h']
    this.presenceKey = base + ':p'
  }

  get name (): string {
    return this.local.name
  }

  /** Its subscribers on this instance, those still waiting for the first sync included. */
  get count (): number {
    return this.local.size + this.joining.length
  }
}

interface Inflight {
  deadline: number
  reject: (err: Error) => void
  settled: boolean
  /** Set while it waits for the client to be ready: it has not been sent (expiring then means "not published"). */
  send: (() => void) | null
}

export class RedisTopics implements TopicBroker {
  readonly instance = randomBytes(6).toString('hex')
  readonly #client: RedisClient
  readonly #sub: Subscriber
  readonly #sharded: boolean
  readonly #prefix: string
  readonly #limits: HistoryLimits
  readonly #epochTtl: number
  readonly #envelope: TopicEnvelope
  readonly #publishTimeout: number
  readonly #presenceTtl: number
  readonly #topics = new Map<string, RedisTopic>()
  readonly #byChannel = new Map<string, RedisTopic>()
  #log: BrokerContext['log'] = SILENT_LOG
  readonly #publishScript = new Script(PUBLISH)
  readonly #recoverScript = new Script(RECOVER)
  readonly #presenceScript = new Script(PRESENCE)
  /** Sockets a publish excluded (`except`), by the number that travels with the message. */
  readonly #exceptNumbers = new WeakMap<WebSocket, number>()
  readonly #exceptSockets = new Map<number, WebSocket>()
  #nextNumber = 1
  /** Publishes waiting for Redis, oldest first (all share one timeout). */
  #inflight: Inflight[] = []
  #inflightTimer: NodeJS.Timeout | null = null
  /** Publishes not settled yet (sent and unanswered, or waiting for the client). */
  #unsettled = 0
  /** How many of `inflight` wait for the client to be ready. */
  #waiting = 0
  /** The publish script is loaded in Redis (after each connection of the client). */
  #scriptsLoaded = false
  /** Topics whose count changed since the last presence write. */
  readonly #dirty = new Set<RedisTopic>()
  #flushScheduled = false
  #presenceTimer: NodeJS.Timeout | null = null
  #subDown = false
  #closed = false

  constructor (options: RedisTopicsOptions) {
    if (typeof options !== 'object' || options === null) throw new FST_WS_INVALID_BROKER_OPTION('options', 'expected { client, ... }')
    const known = new Set(['client', 'prefix', 'history', 'epochTtl', 'envelope', 'publishTimeout', 'presenceTtl'])
    for (const key of Object.keys(options)) if (!known.has(key)) throw new FST_WS_INVALID_BROKER_OPTION(key, 'unknown option')
    const c = options.client as Partial<RedisClient> | null | undefined
    if (typeof c !== 'object' || c === null || typeof c.duplicate !== 'function' || typeof c.callBuffer !== 'function') {
      throw new FST_WS_INVALID_BROKER_OPTION('client', 'expected an ioredis Redis or Cluster client')
    }
    const prefix = options.prefix ?? 'ws:'
    if (typeof prefix !== 'string' || /[{}]/.test(prefix)) throw new FST_WS_INVALID_BROKER_OPTION('prefix', 'expected a string without { or }')
    const envelope = options.envelope ?? 'none'
    if (!isTopicEnvelope(envelope)) throw new FST_WS_INVALID_BROKER_OPTION('envelope', "expected 'none', 'json' or a function")
    this.#limits = checkHistoryLimits(options.history, { size: 100, ttl: 300_000 })
    this.#epochTtl = count(options.epochTtl, 'epochTtl', 86_400_000, false)
    this.#publishTimeout = count(options.publishTimeout, 'publishTimeout', 5000, false)
    this.#presenceTtl = count(options.presenceTtl, 'presenceTtl', 15_000, false)
    if (this.#epochTtl < this.#limits.ttl) throw new FST_WS_INVALID_BROKER_OPTION('epochTtl', 'must be at least history.ttl')
    this.#prefix = prefix
    this.#envelope = envelope
    this.#client = options.client
    this.#sharded = options.client.isCluster === true
    this.#sub = subscriberOf(options.client)
    this.#sub.on('messageBuffer', this.#onMessage)
    this.#sub.on('smessageBuffer', this.#onMessage)
    this.#sub.on('ready', this.#onSubReady)
    this.#sub.on('close', this.#onSubClose)
    this.#sub.on('error', this.#onSubError)
    asEmitter(this.#client).on('ready', this.#onClientReady)
    if (this.#client.status === 'ready') this.#onClientReady()
  }

  start (context: BrokerContext): void {
    this.#log = context.log
    this.#presenceTimer = setInterval(this.#refreshPresence, Math.max(100, Math.floor(this.#presenceTtl / 3)))
    this.#presenceTimer.unref()
  }

  // ---- subscribing ----

  subscribe (socket: WebSocket, topic: string, options: SubscribeOptions | undefined): SubscribeResult | Promise<SubscribeResult> {
    let t = this.#topics.get(topic)
    if (t === undefined) t = this.#open(topic)
    this.#markDirty(t)
    if (!t.ready) {
      return new Promise((resolve) => { t.joining.push({ socket, since: options?.since, resolve }) })
    }
    return this.#join(t, socket, options?.since)
  }

  unsubscribe (socket: WebSocket, topic: string): void {
    if (socket.topics.size === 0) this.#forgetExcept(socket)
    const t = this.#topics.get(topic)
    if (t === undefined) return
    t.local.delete(socket)
    for (let i = 0; i < t.joining.length; i++) {
      if (t.joining[i].socket === socket) {
        t.joining[i].resolve({ status: 'cancelled', topic })
        t.joining.splice(i, 1)
        break
      }
    }
    this.#markDirty(t)
    if (t.count === 0) this.#drop(t)
  }

  subscriberCount (topic: string): number {
    const t = this.#topics.get(topic)
    return t === undefined ? 0 : t.count
  }

  /** The topic's keys and channel: `prefix{topic}`, with `%` and `}` escaped so the hash tag is the whole name. */
  #base (topic: string): string {
    return `${this.#prefix}{${topic.replace(/%/g, '%25').replace(/\}/g, '%7D')}}`
  }

  #open (topic: string): RedisTopic {
    const t = new RedisTopic(topic, this.#base(topic))
    this.#topics.set(topic, t)
    this.#byChannel.set(t.channel, t)
    this.#firstSync(t)
    return t
  }

  #drop (t: RedisTopic): void {
    t.dead = true
    if (t.retry !== null) clearTimeout(t.retry)
    this.#topics.delete(t.name)
    if (this.#byChannel.get(t.channel) === t) this.#byChannel.delete(t.channel)
    // A new subscription to the same topic may already be under way: Redis applies the two in order.
    this.#redisUnsubscribe(t.channel).catch((err: unknown) => {
      this.#log.warn({ err, topic: t.name }, 'WebSocket Redis broker: unsubscribe failed')
    })
  }

  #redisSubscribe (channel: string): Promise<unknown> {
    return this.#sharded ? this.#sub.ssubscribe(channel) : this.#sub.subscribe(channel)
  }

  #redisUnsubscribe (channel: string): Promise<unknown> {
    return this.#sharded ? this.#sub.sunsubscribe(channel) : this.#sub.unsubscribe(channel)
  }

  /** Subscribe in Redis, then read the position: messages that arrive in between wait in the queue. */
  #firstSync (t: RedisTopic): void {
    this.#redisSubscribe(t.channel)
      .then(() => this.#recover(t, -1))
      .then(({ epoch, last }) => {
        if (t.dead) return
        const first = t.queue[0]
        t.epoch = epoch
        // What arrived after the subscription took effect is for the local sockets: start just before it.
        t.last = first !== undefined && first.epoch === epoch ? first.offset - 1 : last
        t.ready = true
        if (t.refill) this.#fill(t)
        else this.#drain(t)
        const joining = t.joining
        t.joining = []
        for (const j of joining) {
          const r = this.#join(t, j.socket, j.since)
          if (r instanceof Promise) r.then(j.resolve, () => j.resolve({ status: 'cancelled', topic: t.name }))
          else j.resolve(r)
        }
      })
      .catch((err: unknown) => {
        if (t.dead) return
        this.#log.warn({ err, topic: t.name }, 'WebSocket Redis broker: subscribing failed; retrying')
        this.#scheduleRetry(t, () => this.#firstSync(t))
      })
  }

  #scheduleRetry (t: RedisTopic, again: () => void): void {
    if (t.retry !== null) return
    t.retry = setTimeout(() => {
      t.retry = null
      if (!t.dead && !this.#closed) again()
    }, RETRY_MS)
    t.retry.unref()
  }

  /** A socket joins a topic whose position is known: live at once, or after replaying from `since`. */
  #join (t: RedisTopic, socket: WebSocket, since: TopicPosition | 'history' | undefined): SubscribeResult | Promise<SubscribeResult> {
    if (since === undefined) {
      t.local.sockets.add(socket)
      return { status: 'live', topic: t.name, epoch: t.epoch, offset: t.last }
    }
    t.local.startCatchUp(socket)
    return this.#recover(t, since === 'history' ? 'all' : since.offset).then(({ epoch, last, entries }) => {
      const replay = since === 'history'
        ? decodeHistory(t.name, epoch, entries) ?? []
        : decodeRange(t.name, epoch, entries, since.offset, last)
      return t.local.finishResume(socket, this.#envelope, since, epoch, last, t.last, replay)
    }, (err: unknown) => {
      this.#log.warn({ err, topic: t.name }, 'WebSocket Redis broker: reading the history failed')
      return t.local.abandonResume(socket, this.#envelope, t.epoch, t.last)
    })
  }

  async #recover (t: RedisTopic, since: number | 'all'): Promise<{ epoch: string, last: number, entries: unknown }> {
    const reply = await this.#recoverScript.run(this.#client, t.keys, [since])
    if (!Array.isArray(reply) || reply.length !== 3) throw new Error('unexpected reply to the history script')
    return { epoch: String(reply[0]), last: Number(reply[1]), entries: reply[2] }
  }

  // ---- receiving ----

  readonly #onMessage = (channel: Buffer, message: Buffer): void => {
    const t = this.#byChannel.get(channel.toString())
    if (t === undefined) return
    const m = decodeLive(t.name, message)
    if (m === null) return
    if (t.syncing) {
      if (t.queue.length >= MAX_QUEUED || t.queuedBytes >= MAX_QUEUED_BYTES) {
        // The history read is slow (or failing) while messages keep coming: drop what waits and read it back
        // from the history once the read is done (a gap is signalled only if the history no longer has it).
        t.queue = []
        t.queuedBytes = 0
        t.refill = true
      }
      // Held until the history read finishes: copied, so that it does not pin the client's read buffer.
      m.data = Buffer.from(m.data)
      t.queue.push(m)
      t.queuedBytes += m.data.length
      return
    }
    this.#process(t, m)
  }

  /** One message in order: deliver it, drop it as a duplicate, or fill the gap before it from the history. */
  #process (t: RedisTopic, m: WireMessage): void {
    if (m.epoch !== t.epoch) {
      this.#gap(t, 'epoch-changed', m.epoch, 0)
      t.epoch = m.epoch
      t.last = 0
    }
    if (m.offset <= t.last) return
    if (m.offset > t.last + 1) {
      t.syncing = true
      if (m.data.buffer.byteLength > m.data.length * 2) m.data = Buffer.from(m.data) // see onMessage
      t.queue.unshift(m)
      t.queuedBytes += m.data.length
      this.#fill(t)
      return
    }
    t.last = m.offset
    t.local.deliver(this.#envelope, m, this.#exceptOf(m.origin))
  }

  /** Deliver what waited in the queue, in order (a new gap sends the rest back to waiting). */
  #drain (t: RedisTopic): void {
    t.syncing = false
    const queue = t.queue
    t.queue = []
    t.queuedBytes = 0
    for (let i = 0; i < queue.length; i++) {
      if (t.syncing) {
        for (let k = i; k < queue.length; k++) {
          t.queue.push(queue[k])
          t.queuedBytes += queue[k].data.length
        }
        return
      }
      this.#process(t, queue[i])
    }
  }

  /** Read what was missed after `t.last` from the history and deliver it, or tell the sockets it is lost. */
  #fill (t: RedisTopic): void {
    t.syncing = true
    this.#recover(t, t.last).then(({ epoch, last, entries }) => {
      if (t.dead) return
      if (epoch !== t.epoch) {
        // The topic's state was lost and restarted: what was published in the new epoch may be in the history.
        this.#gap(t, 'epoch-changed', epoch, 0)
        t.epoch = epoch
        t.last = 0
        this.#fill(t)
        return
      }
      const messages = decodeRange(t.name, epoch, entries, t.last, last)
      if (messages === null) {
        this.#gap(t, 'history-expired', epoch, last)
        t.last = last
      } else {
        for (const m of messages) {
          t.last = m.offset
          t.local.deliver(this.#envelope, m, this.#exceptOf(m.origin))
        }
      }
      if (t.refill) {
        // The read may predate a resubscription, or live messages were dropped from a full queue: read on.
        t.refill = false
        this.#fill(t)
        return
      }
      this.#drain(t)
    }, (err: unknown) => {
      if (t.dead) return
      this.#log.warn({ err, topic: t.name }, 'WebSocket Redis broker: reading missed messages failed; retrying')
      this.#scheduleRetry(t, () => this.#fill(t))
    })
  }

  /** Tell every live socket of the topic that messages may be lost; delivery goes on after `offset`. */
  #gap (t: RedisTopic, reason: TopicGapReason, epoch: string, offset: number): void {
    if (t.epoch === '' && reason === 'epoch-changed') return // nothing was ever delivered: nothing can be missing
    for (const socket of t.local.sockets) emitTopicGap(socket, { topic: t.name, reason, epoch, offset })
  }

  // ---- the subscriber connection ----

  readonly #onSubClose = (): void => {
    if (this.#closed || this.#subDown) return
    this.#subDown = true
    this.#log.warn({ instance: this.instance }, 'WebSocket Redis broker: lost the subscriber connection; reconnecting')
  }

  readonly #onSubError = (err: Error): void => {
    // ioredis reports every failed reconnection attempt: one line per outage is enough (onSubClose).
    if (!this.#subDown) this.#log.warn({ err }, 'WebSocket Redis broker: subscriber connection error')
  }

  /** Back after an outage: subscribe again, then read what was missed meanwhile, topic by topic. */
  readonly #onSubReady = (): void => {
    if (!this.#subDown || this.#closed) return
    this.#subDown = false
    this.#log.info({ instance: this.instance, topics: this.#topics.size }, 'WebSocket Redis broker: reconnected; resubscribing')
    for (const t of this.#topics.values()) {
      this.#redisSubscribe(t.channel).then(() => {
        if (t.dead) return
        // A read in flight (first sync or gap fill) may predate this subscription: it reads again when it ends.
        if (!t.ready || t.syncing) t.refill = true
        else this.#fill(t)
      }, (err: unknown) => {
        this.#log.warn({ err, topic: t.name }, 'WebSocket Redis broker: resubscribing failed')
      })
    }
    this.#markAllDirty()
  }

  // ---- publishing ----

  /**
   * While the client is not ready (starting, or reconnecting after an outage) a publish waits for it, in order, at
   * most `publishTimeout`: it is then rejected with FST_WS_BROKER_UNAVAILABLE without ever having been sent. Once
   * sent, a publish Redis does not confirm in time is rejected with FST_WS_BROKER_TIMEOUT (outcome unknown).
   */
  publish (topic: string, data: Buffer, binary: boolean, except: WebSocket | undefined): Promise<PublishResult> {
    if (this.#closed) return Promise.reject(new FST_WS_BROKER_UNAVAILABLE('the broker is closed'))
    if (this.#unsettled >= MAX_UNSETTLED) {
      // Redis is away or stalled and publishes keep coming: refuse at once rather than hold them all.
      return Promise.reject(new FST_WS_BROKER_UNAVAILABLE(`${MAX_UNSETTLED} publishes already wait for Redis: not published`))
    }
    const origin = except !== undefined && except.topics.has(topic) ? `${this.instance}:${this.#exceptNumber(except)}` : ''
    return new Promise<PublishResult>((resolve, reject) => {
      const entry: Inflight = { deadline: Date.now() + this.#publishTimeout, reject, settled: false, send: null }
      this.#track(entry)
      const send = (): void => { this.#send(entry, topic, data, binary, origin, resolve) }
      if (this.#scriptsLoaded && this.#client.status === 'ready' && this.#waiting === 0) {
        send()
      } else {
        entry.send = send
        this.#waiting++
      }
    })
  }

  /**
   * The client is ready (first connection, or back after an outage): load the publish script, then send what
   * waited, in the order it was published. Loading it first keeps one instance's publishes in order: with the
   * script unknown to Redis (a restarted Redis forgets them), EVALSHAs sent back to back would fail with NOSCRIPT
   * and be re-sent as EVAL, while later ones, reaching Redis after another instance loaded it, would not: seen
   * as one instance's messages reordered, under load.
   */
  readonly #onClientReady = (): void => {
    this.#scriptsLoaded = false
    this.#loadScripts().then(() => {
      this.#scriptsLoaded = true
      this.#sendWaiting()
    }, (err: unknown) => {
      // Sent anyway: a NOSCRIPT answer is handled per command (Script.run), at the price of that ordering.
      this.#log.warn({ err }, 'WebSocket Redis broker: loading its scripts failed')
      this.#scriptsLoaded = true
      this.#sendWaiting()
    })
  }

  async #loadScripts (): Promise<void> {
    const nodes = this.#client.isCluster
      ? (this.#client as unknown as { nodes (role: string): RedisClient[] }).nodes('master')
      : [this.#client]
    await Promise.all(nodes.map((node) => node.callBuffer('SCRIPT', 'LOAD', this.#publishScript.source)))
  }

  #sendWaiting (): void {
    if (this.#waiting === 0) return
    this.#waiting = 0
    for (const e of this.#inflight) {
      const send = e.send
      if (send === null) continue
      e.send = null
      if (!e.settled) send()
    }
  }

  #send (entry: Inflight, topic: string, data: Buffer, binary: boolean, origin: string, resolve: (r: PublishResult) => void): void {
    const base = this.#base(topic)
    const reject = entry.reject
    this.#publishScript.run(this.#client, [base + ':m', base + ':h'], [
      base, data, binary ? '1' : '0', origin, randomBytes(6).toString('hex'),
      this.#limits.size, this.#limits.ttl, this.#epochTtl, this.#sharded ? '1' : '0'
    ]).then((reply) => {
      if (entry.settled) return
      this.#settle(entry)
      if (!Array.isArray(reply)) {
        reject(new FST_WS_BROKER_UNAVAILABLE('unexpected reply to the publish script'))
        return
      }
      resolve({ topic, epoch: String(reply[0]), offset: Number(reply[1]) })
    }, (err: unknown) => {
      if (entry.settled) return
      this.#settle(entry)
      reject(new FST_WS_BROKER_UNAVAILABLE(err instanceof Error ? err.message : String(err)))
    })
  }

  #settle (entry: Inflight): void {
    entry.settled = true
    this.#unsettled--
  }

  #track (entry: Inflight): void {
    this.#unsettled++
    this.#inflight.push(entry)
    if (this.#inflightTimer === null) {
      this.#inflightTimer = setInterval(this.#expireInflight, Math.max(10, Math.floor(this.#publishTimeout / 4)))
      this.#inflightTimer.unref()
    }
  }

  /** Reject the publishes past their deadline: the oldest are first, so it stops at the first one still in time. */
  readonly #expireInflight = (): void => {
    const now = Date.now()
    let i = 0
    for (; i < this.#inflight.length; i++) {
      const e = this.#inflight[i]
      if (e.settled) continue
      if (e.deadline > now) break
      this.#settle(e)
      if (e.send !== null) {
        e.send = null
        this.#waiting--
        e.reject(new FST_WS_BROKER_UNAVAILABLE(`Redis was not reachable within ${this.#publishTimeout} ms: not published`))
      } else {
        e.reject(new FST_WS_BROKER_TIMEOUT(this.#publishTimeout))
      }
    }
    if (i > 0) this.#inflight = this.#inflight.slice(i)
    if (this.#inflight.length === 0 && this.#inflightTimer !== null) {
      clearInterval(this.#inflightTimer)
      this.#inflightTimer = null
    }
  }

  #exceptNumber (socket: WebSocket): number {
    let n = this.#exceptNumbers.get(socket)
    if (n === undefined) {
      n = this.#nextNumber++
      this.#exceptNumbers.set(socket, n)
      this.#exceptSockets.set(n, socket)
    }
    return n
  }

  #forgetExcept (socket: WebSocket): void {
    const n = this.#exceptNumbers.get(socket)
    if (n !== undefined) this.#exceptSockets.delete(n)
  }

  #exceptOf (origin: string): WebSocket | undefined {
    if (origin.length === 0 || !origin.startsWith(this.instance)) return undefined
    return this.#exceptSockets.get(Number(origin.slice(this.instance.length + 1)))
  }

  // ---- counts ----

  async subscriberCounts (topic: string): Promise<SubscriberCounts> {
    if (this.#client.status !== 'ready') throw new FST_WS_BROKER_UNAVAILABLE(`the Redis client is ${this.#client.status}`)
    const t = this.#topics.get(topic)
    if (t !== undefined && this.#dirty.has(t)) await this.#flushPresence()
    const reply = await this.#presenceScript.run(this.#client, [this.#base(topic) + ':p'], [this.instance, -1, this.#presenceTtl])
    const instances: Record<string, number> = {}
    let total = 0
    if (Array.isArray(reply)) {
      for (let i = 0; i + 1 < reply.length; i += 2) {
        const n = Number(String(reply[i + 1]))
        instances[String(reply[i])] = n
        total += n
      }
    }
    return { total, instances }
  }

  #markDirty (t: RedisTopic): void {
    this.#dirty.add(t)
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    // Counts are written at most every PRESENCE_FLUSH_MS, not once per subscription: 90,000 sockets subscribing
    // over a few seconds cost 87,806 script calls (2 s of Redis time) when it was once per event-loop turn.
    setTimeout(() => { this.#flushPresence().catch(() => {}) }, PRESENCE_FLUSH_MS).unref()
  }

  #markAllDirty (): void {
    for (const t of this.#topics.values()) this.#dirty.add(t)
    if (this.#dirty.size > 0) this.#flushPresence().catch(() => {})
  }

  /** Write this instance's count of every changed topic (one script call each, sent together). */
  async #flushPresence (): Promise<void> {
    this.#flushScheduled = false
    if (this.#dirty.size === 0) return
    const topics = [...this.#dirty]
    this.#dirty.clear()
    await Promise.all(topics.map(async (t) => {
      const n = t.dead ? 0 : t.count
      try {
        await this.#presenceScript.run(this.#client, [t.presenceKey], [this.instance, n, this.#presenceTtl, 'w'])
      } catch {
        // Written again by the next refresh, or after the reconnection.
        if (!t.dead) this.#dirty.add(t)
      }
    }))
  }

  /** Keep this instance's counts alive while it lives. */
  readonly #refreshPresence = (): void => {
    if (this.#closed || this.#client.status !== 'ready') return
    this.#markAllDirty()
  }

  // ---- shutdown ----

  /** Stop timers, remove this instance's counts, close the subscriber connection. The app's client stays open. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#presenceTimer !== null) clearInterval(this.#presenceTimer)
    if (this.#inflightTimer !== null) clearInterval(this.#inflightTimer)
    for (const e of this.#inflight) {
      if (!e.settled) {
        this.#settle(e)
        e.reject(new FST_WS_BROKER_UNAVAILABLE('the broker closed'))
      }
    }
    this.#inflight = []
    const topics = [...this.#topics.values()]
    for (const t of topics) {
      t.dead = true
      if (t.retry !== null) clearTimeout(t.retry)
      for (const j of t.joining) j.resolve({ status: 'cancelled', topic: t.name })
      t.joining = []
    }
    this.#topics.clear()
    this.#byChannel.clear()
    // This instance's counts go now, not after presenceTtl: the topics it still held, and those it left just before.
    for (const t of topics) this.#dirty.add(t)
    if (this.#client.status === 'ready') await this.#flushPresence()
    this.#sub.removeListener('messageBuffer', this.#onMessage)
    this.#sub.removeListener('smessageBuffer', this.#onMessage)
    this.#sub.removeListener('ready', this.#onSubReady)
    this.#sub.removeListener('close', this.#onSubClose)
    asEmitter(this.#client).removeListener('ready', this.#onClientReady)
    // QUIT waits for Redis: not when it is unreachable (the subscriber's commands wait for it forever), nor long.
    if (this.#sub.status !== 'ready') {
      this.#sub.disconnect()
      return
    }
    let timer: NodeJS.Timeout | undefined
    const quit = this.#sub.quit().catch(() => {})
    const late = new Promise<void>((resolve) => { timer = setTimeout(resolve, 1000) })
    await Promise.race([quit, late])
    clearTimeout(timer)
    this.#sub.disconnect()
  }
}
