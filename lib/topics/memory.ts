/**
 * The default broker: this process's subscriptions, in memory. Each topic has an epoch (random, new whenever the
 * topic's state is created) and numbers its messages from 1; a bounded history (count and age) lets a socket
 * resume with `subscribe(topic, { since })`. Publishing delivers synchronously, before publish() returns.
 */
import { randomBytes } from 'node:crypto'
import { LocalTopic } from './local-topic.js'
import { MemoryHistory, type HistoryLimits } from './history.js'
import { isTopicEnvelope, type TopicEnvelope, type TopicMessage } from './envelope.js'
import { checkHistoryLimits } from './broker-options.js'
import type { PublishResult, SubscribeOptions, SubscribeResult, SubscriberCounts, TopicBroker } from './types.js'
import type { WebSocket } from '../socket/websocket.js'
import { FST_WS_INVALID_BROKER_OPTION } from '../errors.js'

export interface MemoryTopicsOptions {
  /** Per-topic history for resuming. Default `{ size: 100, ttl: 300_000 }` (100 messages, 5 minutes); size 0 turns it off. */
  history?: Partial<HistoryLimits>
  /** How topic messages are framed (see TopicEnvelope). Default 'none'. */
  envelope?: TopicEnvelope
}

interface TopicState {
  local: LocalTopic
  epoch: string
  offset: number
  history: MemoryHistory
  lastPublish: number
}

export class MemoryTopics implements TopicBroker {
  readonly #topics = new Map<string, TopicState>()
  readonly #limits: HistoryLimits
  readonly #envelope: TopicEnvelope
  readonly #instance = randomBytes(4).toString('hex')
  #sweeper: NodeJS.Timeout | null = null

  constructor (options: MemoryTopicsOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new FST_WS_INVALID_BROKER_OPTION('options', 'expected an object')
    this.#limits = checkHistoryLimits(options.history, { size: 100, ttl: 300_000 })
    const envelope = options.envelope ?? 'none'
    if (!isTopicEnvelope(envelope)) throw new FST_WS_INVALID_BROKER_OPTION('envelope', "expected 'none', 'json' or a function")
    this.#envelope = envelope
  }

  #state (topic: string): TopicState {
    let s = this.#topics.get(topic)
    if (s === undefined) {
      s = { local: new LocalTopic(topic), epoch: randomBytes(4).toString('hex'), offset: 0, history: new MemoryHistory(this.#limits), lastPublish: 0 }
      this.#topics.set(topic, s)
      this.#startSweeper()
    }
    return s
  }

  subscribe (socket: WebSocket, topic: string, options: SubscribeOptions | undefined): SubscribeResult {
    const s = this.#state(topic)
    const since = options?.since
    if (since === undefined) {
      s.local.sockets.add(socket)
      return { status: 'live', topic, epoch: s.epoch, offset: s.offset }
    }
    const now = Date.now()
    const replay = since === 'history' ? s.history.all(now) : s.history.after(since.offset, s.offset, now)
    s.local.startCatchUp(socket)
    return s.local.finishResume(socket, this.#envelope, since, s.epoch, s.offset, s.offset, replay)
  }

  unsubscribe (socket: WebSocket, topic: string): void {
    const s = this.#topics.get(topic)
    if (s === undefined) return
    s.local.delete(socket)
    if (s.local.size === 0 && s.history.empty) this.#topics.delete(topic)
  }

  async publish (topic: string, data: Buffer, binary: boolean, except: WebSocket | undefined): Promise<PublishResult> {
    const existing = this.#topics.get(topic)
    // Nobody listens and nothing is kept: no state to create (a publish to a random name must not allocate).
    if (existing === undefined && this.#limits.size === 0) return { topic, epoch: '', offset: 0 }
    const s = existing ?? this.#state(topic)
    const now = Date.now()
    const message: TopicMessage = { topic, epoch: s.epoch, offset: ++s.offset, data, binary }
    s.lastPublish = now
    if (this.#limits.size > 0) {
      // The history keeps its own copy, sized to the payload: the caller's buffer may change, or be a small view
      // of a large one.
      const own = Buffer.allocUnsafeSlow(data.length)
      data.copy(own)
      message.data = own
      s.history.push(message, now)
    }
    s.local.deliver(this.#envelope, message, except)
    return { topic, epoch: s.epoch, offset: s.offset }
  }

  subscriberCount (topic: string): number {
    return this.#topics.get(topic)?.local.size ?? 0
  }

  async subscriberCounts (topic: string): Promise<SubscriberCounts> {
    const n = this.subscriberCount(topic)
    return { total: n, instances: { [this.#instance]: n } }
  }

  async close (): Promise<void> {
    if (this.#sweeper !== null) clearInterval(this.#sweeper)
    this.#sweeper = null
  }

  /** Topics nobody subscribes to are dropped once their history has aged out. */
  #startSweeper (): void {
    if (this.#sweeper !== null || this.#limits.size === 0) return
    this.#sweeper = setInterval(() => {
      const now = Date.now()
      for (const [topic, s] of this.#topics) {
        s.history.trim(now)
        if (s.local.size === 0 && s.history.empty) this.#topics.delete(topic)
      }
      if (this.#topics.size === 0 && this.#sweeper !== null) {
        clearInterval(this.#sweeper)
        this.#sweeper = null
      }
    }, Math.min(this.#limits.ttl, 60_000))
    this.#sweeper.unref()
  }
}
