/**
 * `app.websocketServer`: the open sockets and topic publishing. Its class shape is its documented API and nothing
 * else; the bookkeeping behind `clients` (counts, limits, shutdown) lives in the plugin's ConnectionRegistry.
 */
import { OPCODE_BINARY, OPCODE_TEXT } from '../protocol/constants.js'
import { encodeFrame } from '../protocol/sender.js'
import { FST_WS_INVALID_TOPIC } from '../errors.js'
import { toBytes, type SendData } from '../socket/send-data.js'
import type { TopicBroker } from './topics.js'
import type { WebSocket } from '../socket/websocket.js'

export interface PublishOptions {
  /** Send as binary. Default: true for buffers, false for strings. */
  binary?: boolean
  /** A socket that must not receive it (typically the sender). */
  except?: WebSocket
}

let create: (topics: TopicBroker, clients: ReadonlySet<WebSocket>) => WebSocketServer

export class WebSocketServer {
  /** Every open socket this plugin accepted. */
  readonly clients: ReadonlySet<WebSocket>
  /** Where topic subscriptions live. */
  readonly topics: TopicBroker

  /** Created by the plugin only (createWebSocketServer): `clients` is the live set of its connection registry. */
  private constructor (topics: TopicBroker, clients: ReadonlySet<WebSocket>) {
    this.clients = clients
    this.topics = topics
  }

  static {
    create = (topics, clients) => new WebSocketServer(topics, clients)
  }

  /**
   * Frame `data` once and write the same bytes to every subscriber of `topic`. Returns the number of recipients.
   * Throws FST_WS_INVALID_TOPIC for a bad topic and FST_WS_INVALID_DATA for data `send()` would refuse.
   */
  publish (topic: string, data: SendData, options?: PublishOptions): number {
    if (typeof topic !== 'string' || topic.length === 0) throw new FST_WS_INVALID_TOPIC('a topic is a non-empty string')
    const payload = toBytes(data)
    const binary = typeof data === 'string' ? options?.binary === true : options?.binary !== false
    if (this.topics.subscriberCount(topic) === 0) return 0
    const frame = encodeFrame(binary ? OPCODE_BINARY : OPCODE_TEXT, payload)
    return this.topics.publish(topic, frame, options?.except)
  }

  /** How many sockets of this process are subscribed to `topic`. */
  subscriberCount (topic: string): number {
    return this.topics.subscriberCount(topic)
  }
}

/** The plugin's way to make `app.websocketServer` (not re-exported by the package). */
export function createWebSocketServer (topics: TopicBroker, clients: ReadonlySet<WebSocket>): WebSocketServer {
  return create(topics, clients)
}
