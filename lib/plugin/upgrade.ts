/**
 * Upgrade interception: the server's 'upgrade' event is dispatched through Fastify's own router, so hooks,
 * schemas, constraints and 404 handling run exactly as for any request. Any HTTP answer (a hook's 401, a 404,
 * our own 400/403) is written on the raw socket, which is then destroyed once the answer is flushed: no upgrade.
 *
 * The listener never throws, whatever the bytes: a fault in any of its steps destroys that connection and is
 * logged. An upgrade pipelined behind a plain request whose response is still being written (HTTP/1.1
 * pipelining) waits for that response, then is routed; if Node ended the connection meanwhile (the first request
 * said `Connection: close`), the upgrade is dropped.
 */
import { ServerResponse, STATUS_CODES, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { EventEmitter } from 'node:events'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { ConnectionRegistry } from './registry.js'
import type { HandshakeTimer, TimedHandshake } from './handshake-timer.js'

export const kUpgrade = Symbol('fastify-rfc6455.upgrade')

/** An upgrade between the 'upgrade' event and its 101 (or its refusal). Hung on the request while it is routed. */
export interface PendingUpgrade extends TimedHandshake {
  readonly socket: Duplex
  readonly req: IncomingMessage
  /** Bytes that followed the request head in the same read; emptied once the connection has taken them. */
  head: Buffer
  /** The response the router answers through; null until the upgrade is routed. */
  res: ServerResponse | null
  readonly timer: HandshakeTimer | null
}

export type UpgradeRequest = IncomingMessage & { [kUpgrade]?: PendingUpgrade | undefined }

const EMPTY = Buffer.alloc(0)

/**
 * Requests some registration of the plugin has taken. Each registration adds its own 'upgrade' listener to the
 * one HTTP server and all of them route through the same router: the first listener handles the upgrade.
 */
const taken = new WeakSet<IncomingMessage>()

function swallow (this: Duplex): void {
  this.destroy()
}

function destroySelf (this: Duplex): void {
  this.destroy()
}

/**
 * Close a connection whose answer has been written: discard what the client still sends (closing over unread
 * bytes would reset the connection, and the client could lose the answer), send FIN, and destroy the socket
 * once everything written is flushed, so that a client that never closes its side cannot hold it open.
 */
function closeAfterFlush (socket: Duplex): void {
  socket.resume()
  if (!socket.writableEnded) socket.end()
  if (socket.writableFinished) socket.destroy()
  else socket.once('finish', destroySelf)
}

/** The upgrade will not happen: forget it (timer, request) so that nothing it held outlives it. */
function settle (pending: PendingUpgrade): void {
  pending.done = true
  pending.head = EMPTY
  if (pending.timer !== null) pending.timer.untrack(pending)
  const req = pending.req as UpgradeRequest
  if (req[kUpgrade] === pending) req[kUpgrade] = undefined
}

/** The router answered with HTTP (a refusal, a 404, a hook's reply, a plain route): end that connection. */
function onAnswerFlushed (this: ServerResponse): void {
  const pending = (this.req as UpgradeRequest)[kUpgrade]
  if (pending === undefined || pending.done) return
  settle(pending)
  closeAfterFlush(pending.socket)
}

/** Answer a raw socket that never reaches the router, then destroy it once flushed. */
export function rawReject (socket: Duplex, status: number, reason: string): void {
  const text = STATUS_CODES[status] ?? 'Error'
  const body = JSON.stringify({ statusCode: status, error: text, message: reason })
  socket.write(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n` +
    `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  closeAfterFlush(socket)
}

/**
 * The response Node's HTTP server is still writing on `socket` for an earlier request of the connection, if any.
 * Node keeps it as `socket._httpMessage`, the field ServerResponse#assignSocket itself checks before refusing a
 * second response with ERR_HTTP_SOCKET_ASSIGNED; Node has no public equivalent. This is the one place that reads
 * it (check it on Node major upgrades; test/plugin/pipelining.test.ts covers it). A pipelined response queued
 * behind it is assigned when it finishes, so waiting on it and asking again covers any depth of pipelining.
 */
function inFlightResponse (socket: Duplex): EventEmitter | null {
  const message = (socket as { _httpMessage?: unknown })._httpMessage
  if (message === null || message === undefined) return null
  return typeof (message as EventEmitter).once === 'function' ? message as EventEmitter : null
}

export function createUpgradeListener (fastify: FastifyInstance, registry: ConnectionRegistry, timer: HandshakeTimer | null) {
  const log: FastifyBaseLogger = fastify.log

  function fail (socket: Duplex, err: unknown): void {
    log.error({ err }, 'WebSocket upgrade failed; connection destroyed')
    socket.destroy()
  }

  function refuseClosing (req: IncomingMessage, socket: Duplex): void {
    log.info({ url: req.url, status: 503, reason: 'Server is shutting down' }, 'WebSocket upgrade refused: server is shutting down')
    rawReject(socket, 503, 'Server is shutting down')
  }

  function route (pending: PendingUpgrade): void {
    const res = new ServerResponse(pending.req)
    res.shouldKeepAlive = false
    res.assignSocket(pending.socket as Socket)
    pending.res = res
    ;(pending.req as UpgradeRequest)[kUpgrade] = pending
    res.on('finish', onAnswerFlushed)
    fastify.routing(pending.req, res)
  }

  function waitFor (pending: PendingUpgrade, response: EventEmitter): void {
    // 'close' follows the response's 'finish' (a tick later, once Node moved on to the next response), and also
    // comes when the connection dies under it.
    response.once('close', () => {
      try {
        resume(pending)
      } catch (err) {
        settle(pending)
        fail(pending.socket, err)
      }
    })
  }

  function resume (pending: PendingUpgrade): void {
    const socket = pending.socket
    if (socket.destroyed || socket.writableEnded) {
      // Node closed the connection after the earlier response (it asked for Connection: close, or failed).
      log.info({ url: pending.req.url }, 'WebSocket upgrade dropped: the connection was closed after the response to an earlier request')
      settle(pending)
      socket.destroy()
      return
    }
    const next = inFlightResponse(socket)
    if (next !== null) return waitFor(pending, next)
    if (registry.closing) {
      settle(pending)
      return refuseClosing(pending.req, socket)
    }
    route(pending)
  }

  return function onUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (taken.has(req)) return
    taken.add(req)
    let pending: PendingUpgrade | null = null
    try {
      // Node removed its own listeners: without this, a reset before we answer would crash the process.
      socket.on('error', swallow)
      if (registry.closing) return refuseClosing(req, socket)
      pending = { socket, req, head, res: null, done: false, deadline: 0, timer }
      if (timer !== null) timer.track(pending)
      const inFlight = inFlightResponse(socket)
      if (inFlight !== null) return waitFor(pending, inFlight)
      route(pending)
    } catch (err) {
      if (pending !== null) settle(pending)
      fail(socket, err)
    }
  }
}

/**
 * Take the socket away from the HTTP machinery once the handshake succeeds. Returns the bytes that came with the
 * handshake; from here on nothing the request keeps alive refers to them (or to the response or the socket).
 */
export function claimSocket (pending: PendingUpgrade): Buffer {
  const head = pending.head
  const socket = pending.socket
  if (pending.res !== null) pending.res.detachSocket(socket as Socket)
  pending.res = null
  socket.removeListener('error', swallow)
  settle(pending)
  return head
}

/** The client left during the hooks: nothing to answer, nothing to upgrade. */
export function abandonUpgrade (pending: PendingUpgrade): void {
  settle(pending)
  pending.socket.destroy()
}
