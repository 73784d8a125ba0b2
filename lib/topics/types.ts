/**
 * The contract between the plugin and a topic broker (in memory, or cluster-wide on Redis), and the values that
 * cross it: positions, subscription results, gap signals, publish receipts. The plugin puts its limits in front
 * of any broker (plugin/topic-hub.ts); a broker owns ordering, offsets, history and delivery to this process's
 * sockets.
 */
import type { WebSocket } from '../socket/websocket.js'

/**
 * Where a message sits in its topic's stream: `offset` counts the topic's messages from 1 within an `epoch`.
 * A new epoch starts when the topic's state was lost (a Redis without persistence restarted, a process restarted
 * with the in-memory broker, the topic's metadata expired): offsets of different epochs are not comparable.
 */
export interface TopicPosition {
  epoch: string
  offset: number
}

export interface SubscribeOptions {
  /**
   * Resume: deliver, in order, every message published after this position (the last one the client received),
   * then continue live, with no duplicate and no gap at the switch. When the broker cannot (the position is older
   * than the history, or from another epoch), the result says so with `status: 'gap'` and nothing is replayed.
   * `'history'`: replay whatever the history holds (a late joiner's recent conversation), then live.
   */
  since?: TopicPosition | 'history'
}

/** Why a socket may have missed messages of a topic. */
export type TopicGapReason =
  /** The topic's stream was reset (its epoch changed): positions from before are meaningless. */
  | 'epoch-changed'
  /** The messages after the given position are no longer in the history (count or age limit). */
  | 'history-expired'
  /** The given position is ahead of the topic (an offset it never reached). */
  | 'unknown-position'
  /** The broker could not read the history (Redis unreachable): whether messages were missed is unknown. */
  | 'broker-unavailable'

/** What `socket.subscribe()` resolves with. It never rejects; misuse (limits, a bad topic) throws synchronously. */
export type SubscribeResult =
  /** Subscribed without `since`: live from `offset` on (the next message has a greater offset). */
  | { status: 'live', topic: string, epoch: string, offset: number }
  /** `since` was honoured: `replayed` missed messages were sent, then live from `offset` on. */
  | { status: 'recovered', topic: string, epoch: string, offset: number, replayed: number }
  /** `since` could not be honoured: nothing was replayed; live from `offset` on. Reload state from elsewhere. */
  | { status: 'gap', topic: string, epoch: string, offset: number, reason: TopicGapReason }
  /** The socket was already subscribed: nothing was done. */
  | { status: 'unchanged', topic: string }
  /** The socket was not open, unsubscribed or closed before the subscription became live, or the broker failed (logged). */
  | { status: 'cancelled', topic: string }

/**
 * A subscribed socket may have missed messages after its subscription became live (the broker lost its
 * connection and could not recover them from the history, or the topic's epoch changed): emitted on the socket as
 * 'topicGap'. Delivery continues after `offset`.
 */
export interface TopicGap {
  topic: string
  reason: TopicGapReason
  epoch: string
  offset: number
}

/** What a publish resolves with: the position the broker gave the message. */
export interface PublishResult {
  topic: string
  epoch: string
  offset: number
}

/** Subscriber counts of a topic: over every instance sharing the broker, and per instance. */
export interface SubscriberCounts {
  total: number
  /** Instance id → count. The in-memory broker has one instance. */
  instances: Record<string, number>
}

/** What the plugin hands a broker when the app starts. */
export interface BrokerContext {
  log: { warn (obj: object, msg: string): void, error (obj: object, msg: string): void, info (obj: object, msg: string): void }
}

/**
 * A topic broker. The plugin calls it with validated arguments only (non-empty topic names within the limits,
 * sockets that are open). Implementations must not throw out of unsubscribe() and must never reject
 * subscribe()'s promise.
 */
export interface TopicBroker {
  /** Called once by the plugin at registration. */
  start? (context: BrokerContext): void
  /** Called when the app closes, after every socket was closed. */
  close? (): Promise<void>
  subscribe (socket: WebSocket, topic: string, options: SubscribeOptions | undefined): SubscribeResult | Promise<SubscribeResult>
  unsubscribe (socket: WebSocket, topic: string): void
  /**
   * Publish a payload (not framed: each instance frames it once for all its subscribers). Rejects when the
   * message was not accepted (the broker is unreachable or did not answer in time).
   */
  publish (topic: string, data: Buffer, binary: boolean, except: WebSocket | undefined): Promise<PublishResult>
  /** Subscribers of `topic` on this instance. */
  subscriberCount (topic: string): number
  /** Subscribers of `topic` on every instance sharing the broker. */
  subscriberCounts (topic: string): Promise<SubscriberCounts>
}
