/**
 * The topic limits. A socket's subscribe() asks its route's hub before it records a topic; this hub refuses a
 * name over `maxTopicLength` or a socket that already holds `maxTopicsPerSocket` topics, then hands the
 * subscription to whatever TopicBroker is configured (in memory or cluster-wide), so the limits hold whatever
 * the broker. One hub per route, so a route's own limits apply to its sockets. Both checks take constant time:
 * `topic.length` and the socket's own topic count.
 */
import { FST_WS_TOPIC_LIMIT } from '../errors.js'
import type { TopicHub, WebSocket } from '../socket/websocket.js'

export interface TopicLimits {
  /** Topics one socket may be subscribed to at once. */
  maxTopicsPerSocket: number
  /** Longest topic name, in UTF-16 code units (`topic.length`). */
  maxTopicLength: number
}

export class LimitedTopicHub implements TopicHub {
  /** The configured TopicBroker (or any hub) the accepted subscriptions go to. */
  private readonly broker: TopicHub
  private readonly maxTopicsPerSocket: number
  private readonly maxTopicLength: number

  constructor (broker: TopicHub, limits: TopicLimits) {
    this.broker = broker
    this.maxTopicsPerSocket = limits.maxTopicsPerSocket
    this.maxTopicLength = limits.maxTopicLength
  }

  /** Called with a topic the socket does not hold yet; `socket.topics` is what it holds so far. Throws to refuse. */
  subscribe (socket: WebSocket, topic: string): void {
    if (topic.length > this.maxTopicLength) {
      throw new FST_WS_TOPIC_LIMIT(`the topic name is ${topic.length} characters long; maxTopicLength is ${this.maxTopicLength}`)
    }
    if (socket.topics.size >= this.maxTopicsPerSocket) {
      throw new FST_WS_TOPIC_LIMIT(`the socket is already subscribed to ${socket.topics.size} topics; maxTopicsPerSocket is ${this.maxTopicsPerSocket}`)
    }
    this.broker.subscribe(socket, topic)
  }

  unsubscribe (socket: WebSocket, topic: string): void {
    this.broker.unsubscribe(socket, topic)
  }
}
