/**
 * The topic limits. A socket's subscribe() asks its route's hub before it records a topic; this hub refuses a
 * name over `maxTopicLength` or a socket that already holds `maxTopicsPerSocket` topics, then hands the
 * subscription to whatever TopicBroker is configured (in memory or cluster-wide), so the limits hold whatever
 * the broker. One hub per route, so a route's own limits apply to its sockets. Both checks take constant time:
 * `topic.length` and the socket's own topic count.
 *
 * It is also where a broker's failure stops: a broker that throws or rejects on subscribe (a custom one) gives
 * the socket a `cancelled` result and a log line, never an unhandled rejection.
 */
import { FST_WS_TOPIC_LIMIT } from '../errors.js'
import type { TopicHub, WebSocket } from '../socket/websocket.js'
import type { SubscribeOptions, SubscribeResult, TopicBroker } from '../topics/types.js'

export interface TopicLimits {
  /** Topics one socket may be subscribed to at once. */
  maxTopicsPerSocket: number
  /** Longest topic name, in UTF-16 code units (`topic.length`). */
  maxTopicLength: number
}

interface HubLog { error (obj: object, msg: string): void }

export class LimitedTopicHub implements TopicHub {
  /** The configured TopicBroker the accepted subscriptions go to. */
  private readonly broker: TopicBroker
  private readonly maxTopicsPerSocket: number
  private readonly maxTopicLength: number
  private readonly log: HubLog

  constructor (broker: TopicBroker, limits: TopicLimits, log: HubLog) {
    this.broker = broker
    this.maxTopicsPerSocket = limits.maxTopicsPerSocket
    this.maxTopicLength = limits.maxTopicLength
    this.log = log
  }

  /** Called with a topic the socket does not hold yet; `socket.topics` is what it holds so far. Throws to refuse. */
  subscribe (socket: WebSocket, topic: string, options: SubscribeOptions | undefined): SubscribeResult | Promise<SubscribeResult> {
    if (topic.length > this.maxTopicLength) {
      throw new FST_WS_TOPIC_LIMIT(`the topic name is ${topic.length} characters long; maxTopicLength is ${this.maxTopicLength}`)
    }
    if (socket.topics.size >= this.maxTopicsPerSocket) {
      throw new FST_WS_TOPIC_LIMIT(`the socket is already subscribed to ${socket.topics.size} topics; maxTopicsPerSocket is ${this.maxTopicsPerSocket}`)
    }
    let result: SubscribeResult | Promise<SubscribeResult>
    try {
      result = this.broker.subscribe(socket, topic, options)
    } catch (err) {
      return this.failed(err, topic)
    }
    if (result instanceof Promise) return result.catch((err: unknown) => this.failed(err, topic))
    return result
  }

  unsubscribe (socket: WebSocket, topic: string): void {
    this.broker.unsubscribe(socket, topic)
  }

  private failed (err: unknown, topic: string): SubscribeResult {
    this.log.error({ err, topic }, 'WebSocket topic broker failed to subscribe a socket')
    return { status: 'cancelled', topic }
  }
}
