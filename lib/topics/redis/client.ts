/**
 * The Redis client the application passes in. The plugin never imports a Redis library: it talks to the
 * ioredis `Redis` or `Cluster` object the app already has, through the few members below, and opens its
 * subscriber connection with the client's own `duplicate()`. Scripts are sent with EVALSHA and re-sent with EVAL
 * when Redis answers NOSCRIPT (a restarted Redis has forgotten them).
 */
import { createHash } from 'node:crypto'
import type { EventEmitter } from 'node:events'

/** The members of an ioredis `Redis` or `Cluster` (ioredis 5.4 or later) that the broker uses. */
export interface RedisClient {
  /** 'ready' while connected (ioredis). */
  readonly status: string
  /** true for an ioredis `Cluster`: the broker then uses sharded pub/sub (SSUBSCRIBE/SPUBLISH). */
  readonly isCluster: boolean
  duplicate (): RedisClient
  callBuffer (command: string, ...args: Array<string | Buffer | number>): Promise<unknown>
  subscribe (...channels: string[]): Promise<unknown>
  unsubscribe (...channels: string[]): Promise<unknown>
  ssubscribe (...channels: string[]): Promise<unknown>
  sunsubscribe (...channels: string[]): Promise<unknown>
  quit (): Promise<unknown>
  disconnect (): void
}

/** ioredis clients are EventEmitters (not part of RedisClient: its listener types do not fit a structural type). */
export function asEmitter (client: RedisClient): Pick<EventEmitter, 'on' | 'removeListener'> {
  return client as unknown as Pick<EventEmitter, 'on' | 'removeListener'>
}

/** The subscriber connection; its events are an EventEmitter's (ioredis clients are). */
export type Subscriber = RedisClient & Pick<EventEmitter, 'on' | 'removeListener'>

/** The subscriber connection: a duplicate that does not re-subscribe by itself (the broker does, then resyncs). */
export function subscriberOf (client: RedisClient): Subscriber {
  const dup = client.duplicate as unknown as (...args: unknown[]) => Subscriber
  // Commands on the subscriber wait for Redis to come back instead of failing after a number of retries.
  const options = { autoResubscribe: false, maxRetriesPerRequest: null, enableReadyCheck: true }
  return client.isCluster
    ? dup.call(client, undefined, { ...options, shardedSubscribers: true })
    : dup.call(client, options)
}

export class Script {
  readonly source: string
  readonly sha: string

  constructor (source: string) {
    this.source = source
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  /** Run it; with EVAL once if Redis does not know it (first use, or after a restart). */
  async run (client: RedisClient, keys: readonly string[], args: ReadonlyArray<string | Buffer | number>): Promise<unknown> {
    try {
      return await client.callBuffer('EVALSHA', this.sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
      return await client.callBuffer('EVAL', this.source, keys.length, ...keys, ...args)
    }
  }
}
