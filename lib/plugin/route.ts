/**
 * Route registration: every route declared with `websocket` or `wsHandler`
 * gets its options validated and merged once, and its handler wrapped so
 * that an upgrade goes to the WebSocket handler and a plain request to the
 * HTTP handler (or a 426 when the route has none).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { FST_WS_INVALID_ROUTE } from '../errors.js'
import { resolveOptions } from './options.js'
import { hasToken } from '../http/handshake.js'
import { kUpgrade, type UpgradeRequest } from './upgrade.js'
import { kStream, markedConfig, type StreamRequest } from './http2.js'
import { handleUpgrade, type AnyWebSocketHandler, type PluginState, type RouteState } from './accept.js'
import { isWebSocketRoute, markServed, type WebSocketRouteFields } from './route-guard.js'
import { LimitedTopicHub } from './topic-hub.js'
import { ENVELOPE_PROTOCOL } from '../socket/envelope.js'
import { MessageCodec } from './message-schemas.js'
import type { SocketContext } from '../socket/websocket.js'

function upgradeRequired (reply: FastifyReply): FastifyReply {
  // Setting Connection ourselves overrides Node's keep-alive decision: keep the client's "close" (and HTTP/1.0's default).
  const raw = reply.request.raw
  if (raw.httpVersionMajor >= 2) {
    // HTTP/2 forbids Upgrade and Connection (Node throws on them, out of Fastify's error handler): there a
    // WebSocket is opened with an extended CONNECT (RFC 8441), so the method is what is wrong.
    return reply.code(405).header('allow', 'CONNECT')
      .send({ statusCode: 405, error: 'Method Not Allowed', message: 'This route only accepts WebSocket connections (over HTTP/2: an extended CONNECT)' })
  }
  const close = hasToken(raw.headers.connection, 'close') || raw.httpVersionMajor < 1 || (raw.httpVersionMajor === 1 && raw.httpVersionMinor < 1)
  return reply.code(426).header('upgrade', 'websocket').header('connection', close ? 'Upgrade, close' : 'Upgrade')
    .send({ statusCode: 426, error: 'Upgrade Required', message: 'This route only accepts WebSocket connections' })
}

export function createOnRoute (state: PluginState, onPorts: (ports: ReadonlySet<number> | null, url: string) => void) {
  return function onRoute (this: FastifyInstance, routeOptions: RouteOptions & WebSocketRouteFields): void {
    if (!isWebSocketRoute(routeOptions)) return
    markServed(routeOptions)
    const { websocket, wsHandler } = routeOptions
    const url = routeOptions.url
    if (wsHandler !== undefined && typeof wsHandler !== 'function') {
      throw new FST_WS_INVALID_ROUTE(url, 'wsHandler must be a function')
    }
    const opts = resolveOptions(websocket, state.base, 'websocket.', true)
    if (opts.protocols.includes(ENVELOPE_PROTOCOL) && (opts.messages === null || opts.messages.receive === undefined)) {
      // The envelope carries the route's JSON messages: without a receive schema there is nothing to type them by.
      throw new FST_WS_INVALID_ROUTE(url, `the ${ENVELOPE_PROTOCOL} subprotocol needs websocket.messages with a receive schema`)
    }
    // publish() refuses names no route's socket could subscribe to.
    if (opts.maxTopicLength > state.topicNames.longest) state.topicNames.longest = opts.maxTopicLength
    const wsFn = (wsHandler ?? routeOptions.handler) as AnyWebSocketHandler
    const httpHandler = wsHandler !== undefined ? routeOptions.handler : null
    if (typeof wsFn !== 'function') throw new FST_WS_INVALID_ROUTE(url, 'a WebSocket route needs a handler')
    const own = typeof websocket === 'object' && websocket !== null && 'maxConnections' in websocket
    const slot = state.registry.route(own ? opts.maxConnections : Infinity)
    // Shared by the route's sockets.
    const messages = opts.messages === null ? null : new MessageCodec(opts.messages)
    if (messages !== null) {
      // Compiled with this route's (or its instance's) compilers once the app boots: every route, plugin and
      // shared schema (addSchema) is known then, and a schema the compiler refuses fails app.ready().
      const compilers = { validatorCompiler: routeOptions.validatorCompiler, serializerCompiler: routeOptions.serializerCompiler }
      this.addHook('onReady', function compileMessageSchemas (this: FastifyInstance, done) {
        try {
          messages.compile(this, url, compilers)
          done()
        } catch (err) {
          done(err as Error)
        }
      })
    }
    const context: SocketContext = {
      messages,
      topics: new LimitedTopicHub(state.topics, opts, this.log), // the route's topic limits, in front of the plugin's broker
      release: slot.release // the registry's bookkeeping when a socket closes
    }
    const route: RouteState = {
      opts,
      slot,
      handler: wsFn,
      connection: {
        isServer: true,
        maxPayload: opts.maxPayload,
        closeTimeout: opts.closeTimeout,
        sendHighWaterMark: opts.sendHighWaterMark,
        maxBufferedAmount: opts.maxBufferedAmount,
        drainTimeout: opts.drainTimeout,
        inboundHighWaterMark: opts.inboundHighWaterMark,
        heartbeat: opts.heartbeat,
        deflate: null
      },
      context
    }
    onPorts(opts.ports, url)
    const wrapped = function (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
      const raw = request.raw as UpgradeRequest & StreamRequest
      const pending = raw[kUpgrade] ?? raw[kStream] // an HTTP/1.1 upgrade, or an HTTP/2 extended CONNECT
      if (pending === undefined) {
        if (httpHandler !== null) return httpHandler.call(this, request, reply)
        return upgradeRequired(reply)
      }
      return handleUpgrade({ instance: this, plugin: state, route, request, reply, pending, key: '' })
    }
    routeOptions.handler = wrapped
    routeOptions.config = markedConfig(routeOptions.config) as typeof routeOptions.config
  }
}
