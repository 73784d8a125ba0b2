/**
 * WebSockets over HTTP/2 (RFC 8441), the part that knows Node's HTTP/2 server and Fastify:
 *
 * - Node hands an HTTP/2 CONNECT to the server's 'connect' event, never to 'request' (so never to Fastify). The
 *   listener here takes extended CONNECTs with `:protocol websocket`, hangs a PendingStream on the request and runs
 *   it through Fastify's own router as the route's GET: params, schemas, constraints and hooks run exactly as for
 *   an HTTP/1.1 upgrade, and accept.ts applies the same policies. A hook's reply is the stream's response.
 * - SETTINGS_ENABLE_CONNECT_PROTOCOL is advertised only once the app is ready with at least one WebSocket route
 *   (browsers use HTTP/2 WebSockets as soon as a server advertises it), through `server.updateSettings()`, which
 *   applies to every session accepted from then on (sessions only exist once the app listens, after ready).
 * - The sessions that carry WebSockets are remembered, so that app.close() can send GOAWAY on them once every
 *   WebSocket has closed (Node 20's server.close() leaves HTTP/2 sessions open).
 *
 * The stream itself is the WebSocket's Duplex: the engine does not know it is not a TCP socket. Its flow control
 * is HTTP/2's: a stream the peer does not read stops accepting writes at its window, which the engine sees as
 * bytes not flushed (send() returns false, 'drain' later) while the other streams of the session go on.
 */
import type { Http2ServerRequest, Http2ServerResponse, ServerHttp2Stream, ServerHttp2Session } from 'node:http2'
import { STATUS_CODES, type IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { connectKind, connectResponse } from '../http/http2-handshake.js'
import type { ConnectionRegistry } from './registry.js'
import type { HandshakeTimer, TimedHandshake } from './handshake-timer.js'
import { rawReject } from './upgrade.js'

export const kStream = Symbol('fastify-rfc6455.http2-stream')

/** An extended CONNECT between the 'connect' event and its 200 (or its refusal). Hung on the request while routed. */
export interface PendingStream extends TimedHandshake {
  /** Tells it apart from an HTTP/1.1 PendingUpgrade. */
  readonly http2: true
  /** The stream: the WebSocket's Duplex once accepted. */
  readonly socket: ServerHttp2Stream
  readonly req: Http2ServerRequest
  readonly res: Http2ServerResponse
  readonly timer: HandshakeTimer | null
  readonly sessions: StreamSessions
}

export type StreamRequest = IncomingMessage & { [kStream]?: PendingStream | undefined }

/** Requests some registration of the plugin has taken (each registration adds its own 'connect' listener). */
const taken = new WeakSet<object>()
/** Every 'connect' listener of this plugin: a CONNECT nobody else listens for is answered by us. */
const ourListeners = new WeakSet<object>()
/**
 * Set by route.ts on the config of every WebSocket route it serves (a symbol key: Fastify copies it into the route's
 * context config, JSON and user code do not see it): a CONNECT routed anywhere else must not get a 2xx.
 */
export const kWebSocketRoute = Symbol('fastify-rfc6455.websocket-route')

/** The route config with the mark (a copy: the user's object is left alone). */
export function markedConfig (config: unknown): Record<string | symbol, unknown> {
  return { ...(config as object | undefined), [kWebSocketRoute]: true }
}

/** The HTTP/2 sessions that carried at least one WebSocket and are still open (one set per registration). */
export class StreamSessions {
  readonly #sessions = new Set<ServerHttp2Session>()
  /** The sessions' 'close' listener: one function per registration, none per session. */
  readonly #forget: (this: ServerHttp2Session) => void

  constructor () {
    const sessions = this.#sessions
    this.#forget = function forgetSession (this: ServerHttp2Session): void {
      sessions.delete(this)
    }
  }

  add (session: ServerHttp2Session): void {
    if (this.#sessions.has(session)) return
    this.#sessions.add(session)
    session.once('close', this.#forget)
  }

  /** GOAWAY on each (graceful: streams still open finish first). */
  goAway (): void {
    for (const session of this.#sessions) {
      session.removeListener('close', this.#forget)
      if (!session.closed && !session.destroyed) session.close()
    }
    this.#sessions.clear()
  }
}

/** Whether a server is Node's HTTP/2 server (plain or TLS). */
export function isHttp2Server (server: unknown): server is { updateSettings (settings: { enableConnectProtocol: boolean }): void } {
  return typeof (server as { updateSettings?: unknown }).updateSettings === 'function'
}

/** Advertise RFC 8441 on every session accepted from now on. */
export function advertiseConnectProtocol (server: unknown): boolean {
  if (!isHttp2Server(server)) return false
  server.updateSettings({ enableConnectProtocol: true })
  return true
}

function answer (res: Http2ServerResponse, status: number, reason: string): void {
  const body = JSON.stringify({ statusCode: status, error: STATUS_CODES[status], message: reason })
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

/** The stream will not become a WebSocket (or already has): forget the handshake. */
function settle (pending: PendingStream): void {
  pending.done = true
  if (pending.timer !== null) pending.timer.untrack(pending)
  const req = pending.req as unknown as StreamRequest
  if (req[kStream] === pending) req[kStream] = undefined
}

/** The router answered with HTTP (a refusal, a 404, a hook's reply): the stream ends with that answer. */
function onAnswered (this: Http2ServerResponse): void {
  const pending = (this.req as unknown as StreamRequest)[kStream]
  if (pending !== undefined && !pending.done) settle(pending)
}

/**
 * The 'connect' listener. HTTP/2 streams with `:protocol websocket` are routed; any other CONNECT (a proxy
 * tunnel, another protocol, an HTTP/1.1 CONNECT on an `allowHTTP1` server) is left to other 'connect' listeners,
 * and answered as Node would without listeners when there are none. Never throws.
 */
export function createConnectListener (
  fastify: FastifyInstance, registry: ConnectionRegistry, timer: HandshakeTimer | null, sessions: StreamSessions
) {
  const log = fastify.log

  function othersListen (server: { listeners (event: string): unknown[] }): boolean {
    for (const listener of server.listeners('connect')) if (!ourListeners.has(listener as object)) return true
    return false
  }

  function onConnect (this: { listeners (event: string): unknown[] }, req: Http2ServerRequest | IncomingMessage, resOrSocket: Http2ServerResponse | Duplex): void {
    if (taken.has(req)) return
    taken.add(req)
    if ((req as Http2ServerRequest).stream === undefined) {
      // An HTTP/1.1 CONNECT (allowHTTP1): Node destroys it when nobody listens; we answer first.
      if (!othersListen(this)) rawReject(resOrSocket as Duplex, 405, 'CONNECT is not supported')
      return
    }
    const stream = (req as Http2ServerRequest).stream as ServerHttp2Stream
    const res = resOrSocket as Http2ServerResponse
    let pending: PendingStream | null = null
    try {
      const kind = connectKind(req.headers)
      if (kind !== 'websocket') {
        if (othersListen(this)) return
        log.info({ url: req.url, protocol: req.headers[':protocol'] }, 'HTTP/2 CONNECT refused: not a WebSocket')
        if (kind === 'tunnel') answer(res, 405, 'CONNECT is only accepted with :protocol websocket (RFC 8441)')
        else answer(res, 501, `Unsupported :protocol ${JSON.stringify(String(req.headers[':protocol']).slice(0, 40))}`)
        return
      }
      if (registry.closing) {
        log.info({ url: req.url, status: 503, reason: 'Server is shutting down' }, 'WebSocket upgrade refused: server is shutting down')
        answer(res, 503, 'Server is shutting down')
        return
      }
      pending = { http2: true, socket: stream, req: req as Http2ServerRequest, res, timer, sessions, done: false, deadline: 0 }
      if (timer !== null) timer.track(pending)
      ;(req as unknown as StreamRequest)[kStream] = pending
      // The handshake is the route's GET, as over HTTP/1.1: hooks see the same method; the stream's own headers
      // (request.raw.headers[':method']) still say CONNECT.
      Object.defineProperty(req, 'method', { value: 'GET', configurable: true, writable: true, enumerable: true })
      res.once('finish', onAnswered)
      fastify.routing(req as unknown as IncomingMessage, res as never)
    } catch (err) {
      if (pending !== null) settle(pending)
      log.error({ err }, 'WebSocket over HTTP/2 failed; stream reset')
      stream.destroy()
    }
  }
  ourListeners.add(onConnect)
  return onConnect
}

/**
 * onRequest, on HTTP/2 servers: an extended CONNECT that the router sent to a route that is not a WebSocket route
 * is refused before that route's handler could answer it with a 2xx, which a client would take for an open
 * WebSocket. (Over HTTP/1.1 any answer but 101 fails the handshake; over HTTP/2 a 200 is the success.)
 */
export function refuseStreamToPlainRoute (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
  const pending = (request.raw as StreamRequest)[kStream]
  if (pending === undefined || request.is404 || (request.routeOptions.config as unknown as Record<symbol, unknown>)[kWebSocketRoute] === true) {
    done()
    return
  }
  request.log.info({ url: request.url, status: 400 }, 'WebSocket upgrade refused: not a WebSocket route')
  reply.code(400).send({ statusCode: 400, error: STATUS_CODES[400], message: 'This route does not accept WebSocket connections' })
}

/** The client left during the hooks: nothing to answer, nothing to upgrade. */
export function abandonStream (pending: PendingStream): void {
  settle(pending)
  pending.socket.destroy()
}

/** Open the WebSocket on the stream: answer 200 with the negotiated protocol and extensions. */
export function claimStream (pending: PendingStream, protocol: string, extensions: string): ServerHttp2Stream {
  settle(pending)
  pending.res.removeListener('finish', onAnswered)
  const stream = pending.socket
  stream.respond(connectResponse(protocol, extensions))
  // An HTTP/2 idle timeout on the stream (the server's `timeout`) must not reach an idle WebSocket.
  stream.setTimeout(0)
  pending.sessions.add(stream.session as ServerHttp2Session)
  return stream
}
