/**
 * `app.websocketServer`: the open sockets and topic publishing. Its class shape is its documented API and nothing
 * else; the bookkeeping behind `clients` (counts, limits, shutdown) lives in the plugin's ConnectionRegistry.
 */
import { FST_WS_INVALID_TOPIC, FST_WS_TOPIC_LIMIT } from '../errors.js'
import { toBytes, type SendData } from '../socket/send-data.js'
import type { FastifyTypeProvider, FastifyTypeProviderDefault } from 'fastify'
import type { PublishResult, SubscriberCounts, TopicBroker } from '../topics/types.js'
import { speaksEnvelope, type RawMessages, type WebSocket } from '../socket/websocket.js'

interface ServerLog { warn (obj: object, msg: string): void }

/** Compiles a message schema into a serializer (the plugin's instance's serializer compiler). */
export type CompileSerializer = (schema: unknown) => (message: unknown) => string

/** A topic's typed publisher, from `app.websocketServer.channel(schema)`. */
export interface TopicChannel<Message> {
  /** Serialize `message` once with the channel's schema, frame it once, write it to every subscriber of `topic`. */
  publish<P extends string = string, I = RawMessages, O = unknown> (
    topic: string, message: Message, options?: Omit<PublishOptions<WebSocket<P, I, O>>, 'binary'>
  ): Promise<PublishResult>
}

/** One subscriber's outcome of `app.websocketServer.request(topic, …)`. */
export type TopicRequestOutcome =
  | { socket: WebSocket, ok: true, reply: unknown }
  | { socket: WebSocket, ok: false, error: Error }

/** `Socket`: the type of the excluded socket (any route's socket; inferred). */
export interface PublishOptions<Socket = WebSocket> {
  /** Send as binary. Default: true for buffers, false for strings. */
  binary?: boolean
  /** A socket that must not receive it (typically the sender). */
  except?: Socket
}

interface TopicNames { readonly longest: number }

let create: (topics: TopicBroker, clients: ReadonlySet<WebSocket>, compile: CompileSerializer, log: ServerLog, names: TopicNames) => WebSocketServer

export class WebSocketServer<TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault> {
  /** Every open socket this plugin accepted. */
  readonly clients: ReadonlySet<WebSocket>
  /** Where topic subscriptions live. */
  readonly topics: TopicBroker

  readonly #compile: CompileSerializer
  /** A publish nobody awaits must not become an unhandled rejection: it is logged instead (one function, not one per publish). */
  readonly #onUnawaited: (err: unknown) => void
  readonly #names: TopicNames

  /** Created by the plugin only (createWebSocketServer): `clients` is the live set of its connection registry. */
  private constructor (topics: TopicBroker, clients: ReadonlySet<WebSocket>, compile: CompileSerializer, log: ServerLog, names: TopicNames) {
    this.clients = clients
    this.topics = topics
    this.#compile = compile
    this.#onUnawaited = (err) => { log.warn({ err }, 'WebSocket publish failed') }
    this.#names = names
  }

  static {
    create = (topics, clients, compile, log, names) => new WebSocketServer(topics, clients, compile, log, names)
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
      publish: (topic, message, options) => this.publish(topic, serialize(message), options === undefined ? undefined : { except: options.except as WebSocket | undefined })
    }
  }

  /**
   * Publish `data` to every subscriber of `topic` (on every instance, with a cluster-wide broker). Each instance
   * frames it once and writes the same bytes to all its subscribers. Resolves with the message's position in the
   * topic once the broker accepted it (the in-memory broker has delivered it by then); rejects with
   * FST_WS_BROKER_UNAVAILABLE (not published) or FST_WS_BROKER_TIMEOUT (outcome unknown) when the broker cannot
   * take it. A rejection nobody handles is logged, never an unhandled rejection. Throws FST_WS_INVALID_TOPIC for
   * a bad topic, FST_WS_TOPIC_LIMIT for a name longer than any route's `maxTopicLength` (nobody could subscribe
   * to it, and a broker's history would keep it) and FST_WS_INVALID_DATA for data `send()` would refuse.
   */
  publish<P extends string = string, I = RawMessages, O = unknown> (
    topic: string, data: SendData, options?: PublishOptions<WebSocket<P, I, O>>
  ): Promise<PublishResult> {
    if (typeof topic !== 'string' || topic.length === 0) throw new FST_WS_INVALID_TOPIC('a topic is a non-empty string')
    if (topic.length > this.#names.longest) {
      throw new FST_WS_TOPIC_LIMIT(`the topic name is ${topic.length} characters long; no route accepts more than ${this.#names.longest}`)
    }
    const payload = toBytes(data)
    const binary = typeof data === 'string' ? options?.binary === true : options?.binary !== false
    const result = this.topics.publish(topic, payload, binary, options?.except as WebSocket | undefined)
    // Marks the promise handled (the caller's await still sees the rejection) and logs it for fire-and-forget use.
    result.catch(this.#onUnawaited)
    return result
  }

  /**
   * Send a request to every subscriber of `topic` on this instance whose socket speaks the `fastify-rfc6455.v1`
   * envelope (each serializes it with its route's `send` schema), and resolve, once every one has answered, failed
   * or timed out, with one outcome per socket: which ones replied (and what) and which failed, with the error
   * (FST_WS_REQUEST_TIMEOUT, _FAILED, _CLOSED). Subscribers on other instances are not asked.
   */
  async request (topic: string, message: unknown, options?: { timeout?: number }): Promise<TopicRequestOutcome[]> {
    if (typeof topic !== 'string' || topic.length === 0) throw new FST_WS_INVALID_TOPIC('a topic is a non-empty string')
    const asked: WebSocket[] = []
    for (const socket of this.clients) {
      if (socket.isSubscribed(topic) && speaksEnvelope(socket)) asked.push(socket)
    }
    const settled = await Promise.allSettled(asked.map((socket) => socket.request(message, options)))
    return settled.map((s, i) => s.status === 'fulfilled'
      ? { socket: asked[i]!, ok: true as const, reply: s.value as unknown }
      : { socket: asked[i]!, ok: false as const, error: s.reason as Error })
  }

  /** How many sockets of this process are subscribed to `topic`. */
  subscriberCount (topic: string): number {
    return this.topics.subscriberCount(topic)
  }

  /** How many sockets are subscribed to `topic` on every instance sharing the broker, and per instance. */
  subscriberCounts (topic: string): Promise<SubscriberCounts> {
    if (typeof topic !== 'string' || topic.length === 0) throw new FST_WS_INVALID_TOPIC('a topic is a non-empty string')
    return this.topics.subscriberCounts(topic)
  }
}

/** The plugin's way to make `app.websocketServer` (not re-exported by the package). */
export function createWebSocketServer (
  topics: TopicBroker, clients: ReadonlySet<WebSocket>, compile: CompileSerializer, log: ServerLog, names: TopicNames
): WebSocketServer {
  return create(topics, clients, compile, log, names)
}
