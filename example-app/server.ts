/**
 * Example app: a small multi-room chat on top of fastify-rfc6455.
 *
 *   npm start            # then open http://127.0.0.1:3000/
 *   PORT=8080 HOST=0.0.0.0 ORIGINS=http://mybox.lan:8080 npm start
 *   REDIS_URL=redis://127.0.0.1:6379 PORT=3001 npm start   # one of several instances sharing rooms
 *
 * - `GET /chat/:room` is a WebSocket route speaking the `chat.v1` subprotocol,
 *   with an Origin allowlist and a port policy tied to the listening port.
 * - Its messages are declared as TypeBox schemas (chat.ts): the plugin parses
 *   and validates what clients send, and serializes what the server sends.
 * - Fan-out uses the plugin's topics: each joined socket subscribes to
 *   `room:<name>` and the server publishes to it through a typed channel.
 *   Without REDIS_URL the topics and the presence live in this process; with it,
 *   in Redis (RedisTopics and presence-store.ts), shared by every instance.
 *   Either way a room's recent log is kept by the broker's history: newcomers
 *   get it replayed, reconnecting pages resume from the last event they saw.
 * - `/`, `/app.js` and `/style.css` are served from example-app/public/.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Redis } from 'ioredis'
import websocket, { ENVELOPE_PROTOCOL, MemoryTopics, RedisTopics, type TopicBroker } from '../lib/index.js'
import {
  ClientMessage, HISTORY_SIZE, MemoryPresence, ROOM_PATTERN, RoomEvent, ServerMessage, SUBPROTOCOL, Session, invalidMessageReply
} from './chat.js'
import type { Member, PresenceStore } from './chat.js'
import { RedisPresence } from './presence-store.js'

/** Largest frame the chat accepts; bigger ones close the socket with 1009. */
export const MAX_FRAME_BYTES = 16 * 1024
export const DEFAULT_HOST = '127.0.0.1'
export const DEFAULT_PORT = 3000

export interface AppOptions {
  /** The port the app will listen on; also its WebSocket port policy. */
  port: number
  /** The host the app will listen on; a non-loopback host is added to the default Origin allowlist. */
  host?: string
  /** Origins allowed to open /chat/:room (default: http://127.0.0.1:PORT and http://localhost:PORT). */
  allowedOrigins?: string[]
  /** Fastify logger (default off). */
  logger?: boolean
  /** Share rooms with every instance on this Redis (an ioredis client, owned by the caller). Default: this process only. */
  redis?: Redis
}

/** How long a room's log is kept for newcomers and for resuming. */
const HISTORY_TTL_MS = 60 * 60 * 1000

interface StaticFile {
  body: Buffer
  type: string
}

const STATIC_FILES: ReadonlyArray<readonly [route: string, file: string, type: string]> = [
  ['/', 'index.html', 'text/html; charset=utf-8'],
  ['/app.js', 'app.js', 'text/javascript; charset=utf-8'],
  ['/style.css', 'style.css', 'text/css; charset=utf-8']
]

/**
 * The plugin's browser client (`fastify-rfc6455/client`), served as it is built: one ES module, no bundler.
 * Found whether this module runs compiled (dist/example-app/) or from source (example-app/, after a build).
 */
export function clientModule (): URL {
  const candidates = [
    new URL('../lib/client/index.js', import.meta.url), // dist/example-app/ -> dist/lib/client/
    new URL('../dist/lib/client/index.js', import.meta.url) // example-app/ (source) -> dist/lib/client/
  ]
  for (const file of candidates) {
    if (existsSync(file)) return file
  }
  throw new Error('example-app: cannot find the built client (run npm run build); looked in ' + candidates.map((u) => fileURLToPath(u)).join(', '))
}

/**
 * Finds example-app/public/ whether this module runs compiled
 * (dist/example-app/server.js) or from source (example-app/server.ts).
 */
export function publicDir (): URL {
  const candidates = [
    new URL('../../example-app/public/', import.meta.url), // dist/example-app/ -> repo root
    new URL('./public/', import.meta.url) // example-app/ (source)
  ]
  for (const dir of candidates) {
    if (existsSync(new URL('index.html', dir))) return dir
  }
  throw new Error('example-app: cannot find public/ (looked in ' + candidates.map((u) => fileURLToPath(u)).join(', ') + ')')
}

function loadStatic (): Map<string, StaticFile> {
  const dir = publicDir()
  const files = new Map<string, StaticFile>()
  for (const [route, file, type] of STATIC_FILES) {
    files.set(route, { body: readFileSync(new URL(file, dir)), type })
  }
  files.set('/client.js', { body: readFileSync(clientModule()), type: 'text/javascript; charset=utf-8' })
  return files
}

/**
 * The default Origin allowlist: the page as served by this app on loopback,
 * plus `http://HOST:PORT` when listening on a specific non-loopback host.
 */
export function defaultOrigins (port: number, host?: string): string[] {
  const origins = [`http://127.0.0.1:${port}`, `http://localhost:${port}`]
  if (host !== undefined && !['127.0.0.1', 'localhost', '0.0.0.0', '::', '::1', ''].includes(host)) {
    origins.push(`http://${host.includes(':') ? `[${host}]` : host}:${port}`)
  }
  return origins
}

export function buildApp (opts: AppOptions): FastifyInstance {
  const { port } = opts
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new TypeError('buildApp: opts.port must be the port the app listens on (1-65535)')
  }
  const origins = opts.allowedOrigins ?? defaultOrigins(port, opts.host)
  const files = loadStatic()

  const app = Fastify({
    logger: opts.logger ?? false,
    // Messages are validated like request bodies, with two changes to Fastify's ajv defaults: no type coercion
    // (a nickname 42 is refused, not turned into "42"), and ajv's discriminator keyword (used by ClientMessage).
    ajv: { customOptions: { coerceTypes: false, discriminator: true } }
  })

  // The room logs: every event carries its position ({ topic, epoch, offset, data }), so pages can resume.
  const history = { size: HISTORY_SIZE, ttl: HISTORY_TTL_MS }
  const topics: TopicBroker = opts.redis === undefined
    ? new MemoryTopics({ envelope: 'json', history })
    : new RedisTopics({ client: opts.redis, envelope: 'json', history })
  const presence: PresenceStore & { close?: () => void } = opts.redis === undefined ? new MemoryPresence() : new RedisPresence(opts.redis)
  app.addHook('onClose', async () => { presence.close?.() })

  app.register(websocket, {
    topics,
    // Chat frames are small JSON objects; refuse anything much bigger (close 1009).
    maxPayload: MAX_FRAME_BYTES,
    // Ping idle sockets so a vanished browser (sleep, lost Wi-Fi) leaves the presence list.
    heartbeat: { interval: 30_000, timeout: 10_000 }
  })

  app.register(async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>()
    // Fan-out through a topic channel: each event is serialized once with the RoomEvent schema and framed
    // once per instance for all its subscribers.
    const rooms = app.websocketServer.channel(RoomEvent)

    for (const [route, file] of files) {
      app.get(route, async (_request, reply) => {
        return reply
          .header('content-type', file.type)
          .header('cache-control', 'no-cache')
          .header('x-content-type-options', 'nosniff')
          .send(file.body)
      })
    }

    app.get('/chat/:room', {
      schema: {
        params: Type.Object({ room: Type.String({ pattern: ROOM_PATTERN }) }, { additionalProperties: false })
      },
      websocket: {
        // The page's client speaks the plugin's envelope (reconnect, resume, requests); chat.v1 is the same chat
        // as plain JSON frames, for clients written by hand.
        protocols: [ENVELOPE_PROTOCOL, SUBPROTOCOL],
        origins,
        ports: [port],
        // Bad input (not JSON, a binary frame, a message the schema refuses) gets an `error` reply; the
        // connection stays open.
        messages: { receive: ClientMessage, send: ServerMessage, onInvalid: 'emit' }
      }
    }, (socket, request) => {
      const member: Member = {
        send (msg) {
          // Nothing is sent (and false returned) once the socket is closing: a reply to a dying peer is moot.
          socket.sendMessage(msg)
        },
        async subscribe (topic, since) {
          // A newcomer gets the recent log replayed; a page that reconnects, what it missed since its position
          // (sent in its join message over chat.v1, in the client's resume frame over the envelope).
          const from = since ?? (await socket.clientPositions()).get(topic)
          const result = await socket.subscribe(topic, { since: from ?? 'history' })
          if (result.status === 'gap') return { ok: false, reason: result.reason }
          return { ok: true, replayed: result.status === 'recovered' ? result.replayed : 0 }
        },
        unsubscribe (topic) {
          // A no-op once closed (the plugin drops a closed socket's topics itself).
          socket.unsubscribe(topic)
        },
        async publish (topic, event, exceptMe) {
          await rooms.publish(topic, event, exceptMe ? { except: socket } : undefined)
        },
        get open () {
          return socket.readyState === socket.OPEN
        }
      }
      const session = new Session(request.params.room, presence, member)
      // An async listener that rejects (Redis unreachable while joining) closes the socket with 1011; the page
      // reconnects.
      socket.on('message', (msg) => session.receive(msg))
      socket.on('invalid', (err) => {
        member.send(invalidMessageReply(err.reason, err.validation))
      })
      socket.on('close', () => {
        session.close().catch((err: unknown) => { request.log.warn({ err }, 'chat: leaving the room failed') })
      })
    })
  })

  return app
}

export interface StartOptions {
  host: string
  port: number
  allowedOrigins: string[] | undefined
  logger: boolean
  /** Share rooms with other instances through this Redis. */
  redisUrl?: string
}

/** Reads HOST, PORT, ORIGINS (comma-separated) and LOG=1 from the environment, with the embedded defaults. */
export function optionsFromEnv (env: NodeJS.ProcessEnv = process.env): StartOptions {
  const host = env.HOST !== undefined && env.HOST !== '' ? env.HOST : DEFAULT_HOST
  let port = DEFAULT_PORT
  if (env.PORT !== undefined && env.PORT !== '') {
    port = Number(env.PORT)
    if (!/^\d{1,5}$/.test(env.PORT) || port <= 0 || port > 65535) throw new Error(`invalid PORT ${JSON.stringify(env.PORT)}`)
  }
  const allowedOrigins = env.ORIGINS !== undefined && env.ORIGINS.trim() !== ''
    ? [...defaultOrigins(port, host), ...env.ORIGINS.split(',').map((o) => o.trim()).filter((o) => o !== '')]
    : undefined
  const redisUrl = env.REDIS_URL !== undefined && env.REDIS_URL !== '' ? env.REDIS_URL : undefined
  return { host, port, allowedOrigins, logger: env.LOG === '1', ...(redisUrl !== undefined && { redisUrl }) }
}

/** Builds the app, listens, and prints the URL to open. */
export async function start (opts: StartOptions, log: (line: string) => void = console.log): Promise<FastifyInstance> {
  const { host, port } = opts
  // ioredis is loaded only when asked for: the embedded mode needs no Redis client installed.
  let redis: Redis | undefined
  if (opts.redisUrl !== undefined) {
    const { Redis } = await import('ioredis')
    redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 2 })
    redis.on('error', (err) => { log(`redis: ${err.message}`) })
  }
  const app = buildApp({
    port, host, logger: opts.logger, ...(redis !== undefined && { redis }), ...(opts.allowedOrigins !== undefined && { allowedOrigins: opts.allowedOrigins })
  })
  if (redis !== undefined) {
    const client = redis
    app.addHook('onClose', async () => { await client.quit().catch(() => client.disconnect()) })
  }
  await app.listen({ port, host })
  if (opts.redisUrl !== undefined) log(`rooms shared through ${opts.redisUrl}`)
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
  log(`example chat listening: open http://${shown.includes(':') ? `[${shown}]` : shown}:${port}/`)
  log(`allowed origins: ${(opts.allowedOrigins ?? defaultOrigins(port, host)).join(', ')}`)
  return app
}

async function main (): Promise<void> {
  const app = await start(optionsFromEnv())
  const stop = (): void => {
    app.close().then(() => process.exit(0), () => process.exit(1))
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

function isMain (): boolean {
  const entry = process.argv[1]
  if (entry === undefined) return false
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isMain()) {
  main().catch((err: unknown) => {
    console.error(err)
    process.exit(1)
  })
}
