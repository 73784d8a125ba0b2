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
import { abandonUpgrade, claimSocket, type PendingUpgrade } from './upgrade.js'
import { abandonStream, claimStream, type PendingStream } from './http2.js'
import { authorityOf, checkExtendedConnect } from '../http/http2-handshake.js'
import { openWebSocket, startWebSocket, failFromUser, type WebSocket, type SocketContext } from '../socket/websocket.js'
import type { TopicBroker } from '../topics/types.js'
import type { ConnectionOptions } from '../protocol/connection.js'
import type { ResolvedOptions } from './options.js'
import type { ConnectionRegistry, RouteSlot } from './registry.js'

export type AnyWebSocketHandler = (this: FastifyInstance, socket: WebSocket<string>, request: FastifyRequest) => unknown

/** What one registration of the plugin shares with its routes. */
export interface PluginState {
  /** Open sockets, counts, limits, shutdown. */
  registry: ConnectionRegistry
  /** Where the sockets' subscribe()/unsubscribe() go, behind each route's limits. */
  topics: TopicBroker
  /** The longest topic name any route accepts (publish refuses longer ones). */
  topicNames: { longest: number }
  trust: TrustFunction | null
  base: ResolvedOptions
}

export interface RouteState {
  opts: ResolvedOptions
  /** The route's share of the registry: its count and its own maxConnections. */
  slot: RouteSlot
  handler: AnyWebSocketHandler
  connection: ConnectionOptions
  /** Shared by the route's sockets. */
  context: SocketContext
}

/** One upgrade on its way through the checks. */
export interface UpgradeAttempt {
  /** The encapsulated instance the route belongs to (`this` of the handler). */
  instance: FastifyInstance
  plugin: PluginState
  route: RouteState
  request: FastifyRequest
  reply: FastifyReply
  /** An HTTP/1.1 upgrade, or an HTTP/2 extended CONNECT (RFC 8441): the same checks, a different answer. */
  pending: PendingUpgrade | PendingStream
  /** The Sec-WebSocket-Key, once the handshake has been checked ('' over HTTP/2, which has none). */
  key: string
}

/** Answer a refused upgrade (the socket is destroyed once the answer is flushed) and log it once. */
function refuse (attempt: UpgradeAttempt, rejection: Rejection, err?: unknown): FastifyReply {
  const { request, reply } = attempt
  const fields = { status: rejection.status, reason: rejection.reason, origin: request.headers.origin }
  if (err === undefined) request.log.info(fields, 'WebSocket upgrade refused: ' + rejection.reason)
  else request.log.error({ ...fields, err }, 'WebSocket upgrade refused: ' + rejection.reason)
  reply.code(rejection.status)
  // HTTP/2 has no Connection field (the refusal ends the stream, not the connection).
  if (!('http2' in attempt.pending)) reply.header('connection', 'close')
  if (rejection.headers !== undefined) reply.headers(rejection.headers)
  return reply.send({ statusCode: rejection.status, error: STATUS_CODES[rejection.status], message: rejection.reason })
}

function originRefused (origin: string): Rejection {
  return { status: 403, reason: `Origin ${JSON.stringify(origin.slice(0, 200))} is not allowed` }
}

export function handleUpgrade (attempt: UpgradeAttempt): FastifyReply | Promise<FastifyReply | undefined> | undefined {
  const { request, route, plugin } = attempt
  const raw = request.raw
  const http2 = 'http2' in attempt.pending
  if (http2) {
    const invalid = checkExtendedConnect(raw.headers)
    if (invalid !== null) return refuse(attempt, invalid)
  } else {
    const key = checkHandshake(raw)
    if (typeof key !== 'string') return refuse(attempt, key)
    attempt.key = key
  }
  const opts = route.opts
  // The port costs a system call: only look it up when a policy needs it.
  const origin = raw.headers.origin
  const needPort = opts.ports !== null || (origin !== undefined && opts.originCheck === null)
  const port = needPort ? clientPort(raw, plugin.trust) : undefined
  if (!portAllowed(opts.ports, port)) {
    return refuse(attempt, { status: 403, reason: `WebSocket upgrades are not accepted on port ${port ?? 'unknown'} (see the "ports" option)` })
  }
  if (origin === undefined) {
    if (opts.requireOrigin) return refuse(attempt, { status: 403, reason: 'Origin header required' })
  } else {
    let verdict: boolean | Promise<boolean>
    try {
      verdict = opts.originCheck === null
        ? isSameOrigin(origin, http2 ? authorityOf(raw.headers) : raw.headers.host, port)
        : opts.originCheck(origin, request)
    } catch (err) {
      return refuse(attempt, { status: 500, reason: 'Origin check failed' }, err)
    }
    if (typeof verdict !== 'boolean') {
      return Promise.resolve(verdict).then(
        (ok) => ok === true ? accept(attempt) : refuse(attempt, originRefused(origin)),
        (err: unknown) => refuse(attempt, { status: 500, reason: 'Origin check failed' }, err))
    }
    if (!verdict) return refuse(attempt, originRefused(origin))
  }
  return accept(attempt)
}

function accept (attempt: UpgradeAttempt): FastifyReply | undefined {
  const { request, reply, pending, route, plugin } = attempt
  if (pending.socket.destroyed) {
    // The peer left while the hooks ran: nobody to upgrade, nothing to count. (A peer that only half-closed
    // may still read our answer: it is upgraded, and the connection finishes its side at once.)
    request.log.info('WebSocket upgrade abandoned: the client closed the connection during the handshake')
    reply.hijack()
    if ('http2' in pending) abandonStream(pending)
    else abandonUpgrade(pending)
    return undefined
  }
  const opts = route.opts
  const full = plugin.registry.admit(route.slot)
  if (full !== null) return refuse(attempt, full)
  const headers = request.raw.headers
  const offered = parseProtocols(headers['sec-websocket-protocol'])
  if (offered === null) return refuse(attempt, { status: 400, reason: 'Malformed Sec-WebSocket-Protocol header' })
  let protocol = ''
  if (offered.length > 0) {
    protocol = opts.selectProtocol !== null
      ? opts.selectProtocol(offered, request) ?? ''
      : pickProtocol(opts.protocols, offered)
    if (protocol !== '' && !offered.includes(protocol)) protocol = ''
    if (protocol === '' && opts.protocolRequired) {
      return refuse(attempt, {
        status: 400,
        reason: `None of the offered subprotocols is supported (this route speaks: ${opts.protocols.join(', ') || 'none'})`
      })
    }
  }
  let extensions = ''
  let connection = route.connection
  if (opts.perMessageDeflate !== null && headers['sec-websocket-extensions'] !== undefined) {
    const offers = parseExtensions(headers['sec-websocket-extensions'])
    if (offers === null) return refuse(attempt, { status: 400, reason: 'Malformed Sec-WebSocket-Extensions header' })
    const negotiated = negotiateServer(offers, opts.perMessageDeflate)
    if (negotiated !== null) {
      extensions = negotiated.response
      const deflate = new PerMessageDeflate(negotiated.params, 'server', opts.perMessageDeflate, opts.maxPayload)
      connection = { ...connection, deflate }
    }
  }

  reply.hijack()
  const socket = pending.socket
  let ws: WebSocket<string>
  let head: Buffer | null = null
  try {
    if ('http2' in pending) claimStream(pending, protocol, extensions)
    else {
      head = claimSocket(pending)
      socket.write(switchingProtocols(attempt.key, protocol, extensions))
    }
    const maybeNet = socket as { setNoDelay?: (v: boolean) => void, setTimeout?: (ms: number) => void, timeout?: number }
    if (typeof maybeNet.setNoDelay === 'function') maybeNet.setNoDelay(true)
    // An HTTP idle timeout (Fastify's connectionTimeout) must not reach an idle WebSocket.
    if (typeof maybeNet.setTimeout === 'function' && (maybeNet.timeout ?? 0) > 0) maybeNet.setTimeout(0)
    ws = openWebSocket(socket, connection, protocol, extensions, route.context, request.log)
  } catch (err) {
    // The reply is hijacked: nothing else would answer or close this connection.
    request.log.error({ err }, 'WebSocket upgrade failed after the handshake was accepted; connection destroyed')
    socket.destroy()
    return undefined
  }
  plugin.registry.add(ws, route.slot)
  let result: unknown
  try {
    result = route.handler.call(attempt.instance, ws, request)
  } catch (err) {
    failFromUser(ws, err, 'handler threw')
  }
  startWebSocket(ws, head)
  if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
    (result as Promise<unknown>).then(undefined, (err: unknown) => failFromUser(ws, err, 'handler rejected'))
  }
  return undefined
}
