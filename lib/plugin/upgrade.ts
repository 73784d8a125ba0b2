/**
 * Upgrade interception: the server's 'upgrade' event is dispatched through
 * Fastify's own router, so hooks, schemas, constraints and 404 handling run
 * exactly as for any request. Any HTTP answer (a hook's 401, a 404, our own
 * 400/403) is written on the raw socket, which is then ended: no upgrade.
 */
import { ServerResponse, STATUS_CODES, type IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import type { WebSocketServer } from './server.js'
import type { HandshakeTimer } from './handshake-timer.js'

export const kUpgrade = Symbol('fastify-rfc6455.upgrade')

export interface PendingUpgrade {
  socket: Duplex
  head: Buffer
  res: ServerResponse
  done: boolean
  /** handshakeTimeout bookkeeping. */
  deadline: number
  timer: HandshakeTimer | null
}

export type UpgradeRequest = IncomingMessage & { [kUpgrade]?: PendingUpgrade }

function swallow (this: Duplex): void {
  this.destroy()
}

function endAfterResponse (this: ServerResponse): void {
  const pending = (this.req as UpgradeRequest)[kUpgrade]
  if (pending !== undefined && !pending.done) pending.socket.end()
}

/** Answer a raw socket that never reaches the router. */
export function rawReject (socket: Duplex, status: number, reason: string): void {
  const text = STATUS_CODES[status] ?? 'Error'
  const body = JSON.stringify({ statusCode: status, error: text, message: reason })
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n` +
    `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}

export function createUpgradeListener (fastify: FastifyInstance, server: WebSocketServer, timer: HandshakeTimer | null) {
  return function onUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node removed its own listeners: without this, a reset before we answer would crash the process.
    socket.on('error', swallow)
    if (server._closing) {
      fastify.log.info({ url: req.url, status: 503 }, 'WebSocket upgrade refused: server is shutting down')
      rawReject(socket, 503, 'Server is shutting down')
      return
    }
    const res = new ServerResponse(req)
    res.shouldKeepAlive = false
    res.assignSocket(socket as import('node:net').Socket)
    const pending: PendingUpgrade = { socket, head, res, done: false, deadline: 0, timer }
    ;(req as UpgradeRequest)[kUpgrade] = pending
    res.on('finish', endAfterResponse)
    if (timer !== null) timer.track(pending)
    try {
      fastify.routing(req, res)
    } catch (err) {
      fastify.log.warn({ err }, 'WebSocket upgrade could not be routed')
      socket.destroy()
    }
  }
}

/** Take the socket away from the HTTP machinery once the handshake succeeds. */
export function claimSocket (pending: PendingUpgrade): Duplex {
  pending.done = true
  const socket = pending.socket
  pending.res.detachSocket(socket as import('node:net').Socket)
  socket.removeListener('error', swallow)
  if (pending.timer !== null) pending.timer.untrack(pending)
  return socket
}
