/**
 * Accepting an upgrade, once the route's hooks have run: the handshake, the
 * port and Origin policies, connection limits, subprotocol and extension
 * negotiation, then the 101 and the socket handed to the route's handler.
 */
import { STATUS_CODES } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { checkHandshake, switchingProtocols, type Rejection } from '../http/handshake.js'
import { clientPort, portAllowed, type TrustFunction } from '../http/ports.js'
import { isSameOrigin } from '../http/origin.js'
import { parseProtocols, pickProtocol } from '../http/subprotocol.js'
import { parseExtensions } from '../http/extension-header.js'
import { negotiateServer } from '../extensions/permessage-deflate/negotiation.js'
import { PerMessageDeflate } from '../extensions/permessage-deflate/codec.js'
import { claimSocket, type PendingUpgrade } from './upgrade.js'
import { WebSocket, type SocketContext } from '../socket/websocket.js'
import type { ConnectionOptions } from '../protocol/connection.js'
import type { ResolvedOptions } from './options.js'
import type { WebSocketServer } from './server.js'

export type AnyWebSocketHandler = (this: FastifyInstance, socket: WebSocket<string>, request: FastifyRequest) => unknown

export interface PluginState {
  server: WebSocketServer
  trust: TrustFunction | null
  base: ResolvedOptions
}

export interface RouteState {
  opts: ResolvedOptions
  /** The route's own maxConnections (Infinity when only the plugin's applies). */
  maxConnections: number
  open: number
  handler: AnyWebSocketHandler
  connection: ConnectionOptions
  /** Shared by the route's sockets. */
  context: SocketContext
}

function reject (request: FastifyRequest, reply: FastifyReply, rejection: Rejection): FastifyReply {
  request.log.info({ status: rejection.status, reason: rejection.reason, origin: request.headers.origin },
    'WebSocket upgrade refused: ' + rejection.reason)
  reply.code(rejection.status).header('connection', 'close')
  if (rejection.headers !== undefined) reply.headers(rejection.headers)
  return reply.send({ statusCode: rejection.status, error: STATUS_CODES[rejection.status], message: rejection.reason })
}

function refuseOrigin (request: FastifyRequest, reply: FastifyReply, origin: string): FastifyReply {
  request.log.warn({ origin }, 'WebSocket upgrade refused: Origin not allowed')
  return reject(request, reply, { status: 403, reason: `Origin ${JSON.stringify(origin.slice(0, 200))} is not allowed` })
}

export function handleUpgrade (
  this: FastifyInstance, state: PluginState, route: RouteState,
  request: FastifyRequest, reply: FastifyReply, pending: PendingUpgrade
): FastifyReply | Promise<FastifyReply | undefined> | undefined {
  const raw = request.raw
  const key = checkHandshake(raw)
  if (typeof key !== 'string') return reject(request, reply, key)
  const opts = route.opts
  // The port costs a system call: only look it up when a policy needs it.
  const origin = raw.headers.origin
  const needPort = opts.ports !== null || (origin !== undefined && opts.originCheck === null)
  const port = needPort ? clientPort(raw, state.trust) : undefined
  if (!portAllowed(opts.ports, port)) {
    return reject(request, reply, { status: 403, reason: `WebSocket upgrades are not accepted on port ${port ?? 'unknown'} (see the "ports" option)` })
  }
  if (origin === undefined) {
    if (opts.requireOrigin) return reject(request, reply, { status: 403, reason: 'Origin header required' })
  } else {
    const verdict = opts.originCheck === null
      ? isSameOrigin(origin, raw.headers.host, port)
      : opts.originCheck(origin, request)
    if (typeof verdict !== 'boolean') {
      return Promise.resolve(verdict).then(
        (ok) => ok === true ? accept.call(this, state, route, request, reply, pending, key) : refuseOrigin(request, reply, origin),
        (err: unknown) => {
          request.log.error({ err }, 'WebSocket origin check failed')
          return reject(request, reply, { status: 500, reason: 'Origin check failed' })
        })
    }
    if (!verdict) return refuseOrigin(request, reply, origin)
  }
  return accept.call(this, state, route, request, reply, pending, key)
}

function accept (
  this: FastifyInstance, state: PluginState, route: RouteState,
  request: FastifyRequest, reply: FastifyReply, pending: PendingUpgrade, key: string
): FastifyReply | undefined {
  if (pending.socket.destroyed || pending.socket.readableEnded) {
    // The peer left (or half-closed) while the hooks ran: nobody to upgrade, nothing to count.
    request.log.info('WebSocket upgrade abandoned: the client closed the connection during the handshake')
    reply.hijack()
    pending.socket.destroy()
    return undefined
  }
  const opts = route.opts
  const server = state.server
  if (server._closing) return reject(request, reply, { status: 503, reason: 'Server is shutting down' })
  if (server._clients.size >= state.base.maxConnections || route.open >= route.maxConnections) {
    return reject(request, reply, { status: 503, reason: 'Too many WebSocket connections (see the "maxConnections" option)' })
  }
  const headers = request.raw.headers
  const offered = parseProtocols(headers['sec-websocket-protocol'])
  if (offered === null) return reject(request, reply, { status: 400, reason: 'Malformed Sec-WebSocket-Protocol header' })
  let protocol = ''
  if (offered.length > 0) {
    protocol = opts.selectProtocol !== null
      ? opts.selectProtocol(offered, request) ?? ''
      : pickProtocol(opts.protocols, offered)
    if (protocol !== '' && !offered.includes(protocol)) protocol = ''
    if (protocol === '' && opts.protocolRequired) {
      return reject(request, reply, {
        status: 400,
        reason: `None of the offered subprotocols is supported (this route speaks: ${opts.protocols.join(', ') || 'none'})`
      })
    }
  }
  let extensions = ''
  let connection = route.connection
  if (opts.perMessageDeflate !== null && headers['sec-websocket-extensions'] !== undefined) {
    const offers = parseExtensions(headers['sec-websocket-extensions'])
    if (offers === null) return reject(request, reply, { status: 400, reason: 'Malformed Sec-WebSocket-Extensions header' })
    const negotiated = negotiateServer(offers, opts.perMessageDeflate)
    if (negotiated !== null) {
      extensions = negotiated.response
      const deflate = new PerMessageDeflate(negotiated.params, 'server', opts.perMessageDeflate, opts.maxPayload)
      connection = { ...connection, deflate }
    }
  }

  reply.hijack()
  const socket = claimSocket(pending)
  socket.write(switchingProtocols(key, protocol, extensions))
  const maybeNet = socket as { setNoDelay?: (v: boolean) => void, setTimeout?: (ms: number) => void, timeout?: number }
  if (typeof maybeNet.setNoDelay === 'function') maybeNet.setNoDelay(true)
  // An HTTP idle timeout (Fastify's connectionTimeout) must not reach an idle WebSocket.
  if (typeof maybeNet.setTimeout === 'function' && (maybeNet.timeout ?? 0) > 0) maybeNet.setTimeout(0)

  const ws = new WebSocket(socket, connection, protocol, extensions, route.context, request.log)
  server._clients.add(ws)
  route.open++
  let result: unknown
  try {
    result = route.handler.call(this, ws, request)
  } catch (err) {
    ws._failFromUser(err, 'handler threw')
  }
  ws._start(pending.head)
  if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
    (result as Promise<unknown>).then(undefined, (err: unknown) => ws._failFromUser(err, 'handler rejected'))
  }
  return undefined
}
