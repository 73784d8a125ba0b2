/**
 * `app.websocketServer`: the open sockets and topic publishing. Its class shape is its documented API and nothing
 * else; the bookkeeping behind `clients` (counts, limits, shutdown) lives in the plugin's ConnectionRegistry.
 */
import { OPCODE_BINARY, OPCODE_TEXT } from '../protocol/constants.js'
import { encodeFrame } from '../protocol/sender.js'
import { FST_WS_INVALID_TOPIC } from '../errors.js'
import { toBytes, type SendData } from '../socket/send-data.js'
import type { FastifyTypeProvider, FastifyTypeProviderDefault } from 'fastify'
import type { TopicBroker } from './topics.js'
import type { WebSocket } from '../socket/websocket.js'

/** Compiles a message schema into a serializer (the plugin's instance's serializer compiler). */
export type CompileSerializer = (schema: unknown) => (message: unknown) => string

/** A topic's typed publisher, from `app.websocketServer.channel(schema)`. */
export interface TopicChannel<Message> {
  /** Serialize `message` once with the channel's schema, frame it once, write it to every subscriber of `topic`. */
  publish (topic: string, message: Message, options?: Omit<PublishOptions, 'binary'>): number
}

export interface PublishOptions {
  /** Send as binary. Default: true for buffers, false for strings. */
  binary?: boolean
  /** A socket that must not receive it (typically the sender). */
  except?: WebSocket
}

let create: (topics: TopicBroker, clients: ReadonlySet<WebSocket>, compile: CompileSerializer) => WebSocketServer

export class WebSocketServer<TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault> {
  /** Every open socket this plugin accepted. */
  readonly clients: ReadonlySet<WebSocket>
  /** Where topic subscriptions live. */
  readonly topics: TopicBroker

  readonly #compile: CompileSerializer

  /** Created by the plugin only (createWebSocketServer): `clients` is the live set of its connection registry. */
  private constructor (topics: TopicBroker, clients: ReadonlySet<WebSocket>, compile: CompileSerializer) {
    this.clients = clients
    this.topics = topics
    this.#compile = compile
  }

  static {
    create = (topics, clients, compile) => new WebSocketServer(topics, clients, compile)
  }

  /**
   * A typed publisher for topics whose messages follow `schema`: the schema is compiled once with the app's
   * serializer compiler (fast-json-stringify by default: fields it does not declare are left out), each message is
   * serialized once and framed once, whatever the number of subscribers. With a type provider, `publish()`'s
   * message is typed from the schema.
   */
  channel<const S> (schema: S): TopicChannel<(TypeProvider & { schema: S })['serializer']> {
    const serialize = this.#compile(schema)
    return {
      publish: (topic, message, options) => this.publish(topic, serialize(message), options === undefined ? undefined : { except: options.except })
    }
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
export function createWebSocketServer (topics: TopicBroker, clients: ReadonlySet<WebSocket>, compile: CompileSerializer): WebSocketServer {
  return create(topics, clients, compile)
}
