// Fastify instances joined by the Redis broker, and `ws` clients that record what they receive: the pieces of the
// cluster-wide topic tests.
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import WebSocket from 'ws'
import websocket, { RedisTopics, type RedisTopicsOptions, type SubscribeResult, type TopicGap } from '../../lib/index.js'
import { captureLogs } from '../helpers/app.js'

export interface Instance {
  app: FastifyInstance
  port: number
  broker: RedisTopics
  redis: Redis
  logs: ReturnType<typeof captureLogs>
  close (): Promise<void>
}

/**
 * One instance: route /t/:topic subscribes (with `?since=epoch:offset` to resume), answers with the subscribe
 * result as `{"subscribed":…}`, forwards 'topicGap' as `{"gap":…}`, and publishes what a client sends to the topic
 * (except to that client).
 */
export async function startInstance (redisUrl: string, options: Partial<RedisTopicsOptions> = {}): Promise<Instance> {
  const redis = new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 2, retryStrategy: () => 100 })
  redis.on('error', () => {})
  const broker = new RedisTopics({ client: redis, envelope: 'json', ...options })
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } }) as unknown as FastifyInstance
  await app.register(websocket, { ports: 'any', topics: broker })
  app.get<{ Params: { topic: string }, Querystring: { since?: string } }>('/t/:topic', { websocket: true }, async (socket, request) => {
    const topic = request.params.topic
    socket.on('topicGap', (gap: TopicGap) => { socket.send(JSON.stringify({ gap })) })
    socket.on('message', (data) => {
      app.websocketServer.publish(topic, data.toString(), { except: socket }).catch(() => {})
    })
    const since = request.query.since
    const [epoch, offset] = since === undefined ? [] : since.split(':')
    const result: SubscribeResult = await socket.subscribe(topic, since === undefined
      ? undefined
      : { since: since === 'history' ? 'history' : { epoch: epoch ?? '', offset: Number(offset) } })
    socket.send(JSON.stringify({ subscribed: result }))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return {
    app,
    port: address.port,
    broker,
    redis,
    logs,
    async close () {
      await app.close()
      redis.disconnect()
    }
  }
}

export interface Envelope { topic: string, epoch: string, offset: number, data: unknown }

/** A `ws` client on /t/:topic that records envelopes, gaps and its subscribe result. */
export class Client {
  readonly ws: WebSocket
  readonly received: Envelope[] = []
  readonly gaps: TopicGap[] = []
  subscribed: SubscribeResult | null = null
  private closedFlag = false

  private constructor (ws: WebSocket) {
    this.ws = ws
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as { subscribed?: SubscribeResult, gap?: TopicGap } & Envelope
      if (m.subscribed !== undefined) this.subscribed = m.subscribed
      else if (m.gap !== undefined) this.gaps.push(m.gap)
      else this.received.push(m)
    })
    ws.on('close', () => { this.closedFlag = true })
    ws.on('error', () => {})
  }

  static async connect (port: number, topic: string, since?: { epoch: string, offset: number } | 'history'): Promise<Client> {
    const q = since === undefined ? '' : since === 'history' ? '?since=history' : `?since=${since.epoch}:${since.offset}`
    const ws = new WebSocket(`ws://127.0.0.1:${port}/t/${encodeURIComponent(topic)}${q}`)
    const c = new Client(ws)
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    const deadline = Date.now() + 5000
    while (c.subscribed === null) {
      if (c.closed) throw new Error('closed before its subscription was live')
      if (Date.now() > deadline) throw new Error('no subscribe result within 5 s')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    return c
  }

  get closed (): boolean {
    return this.closedFlag
  }

  /** The last position received (from an envelope), else the subscribe result's. */
  position (): { epoch: string, offset: number } {
    const last = this.received[this.received.length - 1]
    if (last !== undefined) return { epoch: last.epoch, offset: last.offset }
    const s = this.subscribed
    if (s === null || s.status === 'cancelled' || s.status === 'unchanged') throw new Error('no position')
    return { epoch: s.epoch, offset: s.offset }
  }

  close (): void {
    this.ws.terminate()
  }
}
