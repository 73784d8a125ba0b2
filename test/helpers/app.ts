// The one app builder: Fastify with the plugin registered, every log line captured and parsed, listening on
// 127.0.0.1 only. startServer() adds a /ws route that records its sockets (the engine and socket API tests).
import { Writable } from 'node:stream'
import type { ServerOptions } from 'node:http'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import websocket, { type WebSocketPluginOptions } from '../../lib/index.js'
import type { WebSocket } from '../../lib/socket/websocket.js'
import { within } from './wait.js'

/** A parsed pino line. */
export type LogLine = Record<string, unknown> & {
  level: number
  msg: string
  err?: { type?: string, code?: string, message?: string, stack?: string }
}

/** A pino destination that keeps every log line, parsed. */
export interface LogCapture {
  stream: Writable
  lines: LogLine[]
  /** Lines whose msg contains `text` (and, if given, at this pino level: 30 info, 40 warn, 50 error). */
  find (text: string, level?: number): LogLine[]
}

export function captureLogs (): LogCapture {
  const lines: LogLine[] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as LogLine)
      }
      cb()
    }
  })
  return {
    stream,
    lines,
    find (text, level) {
      return lines.filter((l) => typeof l.msg === 'string' && l.msg.includes(text) && (level === undefined || l.level === level))
    }
  }
}

export interface TestApp {
  app: FastifyInstance
  logs: LogCapture
}

/**
 * A Fastify app with the plugin registered (`ports: 'any'` unless the options say otherwise) and its logs
 * captured from `level` up. `fastifyOptions.http` is passed to http.createServer (server timeouts).
 */
export async function buildApp (
  options: WebSocketPluginOptions = {}, fastifyOptions: FastifyServerOptions & { http?: ServerOptions } = {}, level = 'info'
): Promise<TestApp> {
  const logs = captureLogs()
  const app = Fastify({ ...fastifyOptions, logger: { level, stream: logs.stream } }) as unknown as FastifyInstance
  await app.register(websocket, { ports: 'any', ...options })
  return { app, logs }
}

/** Listen on 127.0.0.1, an ephemeral port. Returns the port. */
export async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

export interface TestServer extends TestApp {
  /** 0 when not listening. */
  port: number
  /** Server sockets, in the order the handler received them. */
  sockets: WebSocket[]
  /** Resolves with the n-th server socket (0-based) once the handler got it. */
  socket (n?: number): Promise<WebSocket>
  /** Terminate every socket, then close the app. */
  close (): Promise<void>
}

/**
 * buildApp() (logs from warn up) with one route, /ws, whose handler records each socket and then runs `handler`;
 * listening unless `listen` is false (then only ready, for injectWS).
 */
export async function startServer (
  options: WebSocketPluginOptions, handler: (socket: WebSocket) => void | Promise<unknown> = () => {}, listening = true
): Promise<TestServer> {
  const { app, logs } = await buildApp(options, {}, 'warn')
  const sockets: WebSocket[] = []
  const waiting: Array<() => void> = []
  app.get('/ws', { websocket: true }, (socket) => {
    sockets.push(socket)
    for (const w of waiting.splice(0)) w()
    return handler(socket)
  })
  let port = 0
  if (listening) port = await listen(app)
  else await app.ready()
  const socket = (n = 0): Promise<WebSocket> => within(new Promise<WebSocket>((resolve) => {
    const check = (): void => {
      if (sockets.length > n) resolve(sockets[n]!)
      else waiting.push(check)
    }
    check()
  }), 2000, `server socket ${n}`)
  const close = async (): Promise<void> => {
    for (const s of sockets) s.terminate()
    await within(app.close(), 5000, 'app.close()')
  }
  return { app, logs, port, sockets, socket, close }
}
