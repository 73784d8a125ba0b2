/**
 * fastify-rfc6455: WebSocket routes for Fastify, with the RFC 6455 engine built in.
 */
import fp from 'fastify-plugin'
import type {
  FastifyInstance, FastifyPluginAsync, FastifyRequest, FastifyBaseLogger, FastifySchema, FastifyTypeProvider,
  FastifyTypeProviderDefault, RawServerBase, RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression,
  RouteGenericInterface, ContextConfigDefault, RouteOptions
} from 'fastify'
import { resolveOptions, DEFAULTS, type WebSocketPluginOptions, type RouteWebSocketOptions } from './plugin/options.js'
import { compileTrust } from './http/ports.js'
import { WebSocketServer } from './plugin/server.js'
import { MemoryTopics } from './plugin/topics.js'
import { createUpgradeListener } from './plugin/upgrade.js'
import { HandshakeTimer } from './plugin/handshake-timer.js'
import { createOnRoute } from './plugin/route.js'
import { injectWS, type InjectWSOptions } from './testing/inject.js'
import type { PluginState } from './plugin/accept.js'
import { FST_WS_INVALID_OPTION } from './errors.js'
import type { WebSocket } from './socket/websocket.js'

export type WebSocketHandler<
  Protocol extends string = string,
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  ContextConfig = ContextConfigDefault,
  SchemaCompiler extends FastifySchema = FastifySchema,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
  Logger extends FastifyBaseLogger = FastifyBaseLogger
> = (
  this: FastifyInstance<RawServer, RawRequest, RawReplyDefaultExpression<RawServer>, Logger, TypeProvider>,
  socket: WebSocket<Protocol>,
  request: FastifyRequest<RouteGeneric, RawServer, RawRequest, SchemaCompiler, TypeProvider, ContextConfig, Logger>
) => void | Promise<unknown>

/* eslint-disable @typescript-eslint/no-unused-vars -- merged declarations must repeat Fastify's type parameters */
declare module 'fastify' {
  interface FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider> {
    /** The open sockets, topic publishing. */
    websocketServer: WebSocketServer
    /** Connect to a WebSocket route in memory (no port): resolves to a client socket, rejects with the HTTP status on refusal. */
    injectWS (path: string, options?: InjectWSOptions): Promise<WebSocket>
  }

  interface RouteShorthandOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> {
    /** Serve WebSocket upgrades on this route: `true`, or per-route options that override the plugin's. */
    websocket?: boolean | RouteWebSocketOptions<readonly string[]>
  }

  interface RouteShorthandMethod<RawServer, RawRequest, RawReply, TypeProvider, Logger> {
    <RouteGeneric extends RouteGenericInterface = RouteGenericInterface, ContextConfig = ContextConfigDefault,
      const SchemaCompiler extends FastifySchema = FastifySchema, const Protocols extends readonly string[] = readonly string[]>(
      path: string,
      opts: RouteShorthandOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> &
        { websocket: true | RouteWebSocketOptions<Protocols> },
      handler: WebSocketHandler<Protocols[number], RawServer, RawRequest, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger>
    ): FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  }

  interface RouteOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> {
    /** The WebSocket handler of a route that also serves plain HTTP with `handler`. */
    wsHandler?: WebSocketHandler<string, RawServer, RawRequest, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger>
  }
}

/* eslint-enable @typescript-eslint/no-unused-vars */

/** `app.route()` options for a WebSocket-only route: `handler` receives the socket. */
export interface WebSocketRouteOptions<
  Protocols extends readonly string[] = readonly string[],
  RawServer extends RawServerBase = RawServerDefault,
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface
> extends Omit<RouteOptions<RawServer, RawRequestDefaultExpression<RawServer>, RawReplyDefaultExpression<RawServer>, RouteGeneric>, 'handler' | 'websocket'> {
  websocket: true | RouteWebSocketOptions<Protocols>
  handler: WebSocketHandler<Protocols[number], RawServer, RawRequestDefaultExpression<RawServer>, RouteGeneric>
}

/** Type helper for `app.route()`: a WebSocket route whose `handler` receives the socket. */
export function webSocketRoute<const Protocols extends readonly string[] = readonly string[], RouteGeneric extends RouteGenericInterface = RouteGenericInterface> (
  options: WebSocketRouteOptions<Protocols, RawServerDefault, RouteGeneric>
): RouteOptions {
  return options as unknown as RouteOptions
}

/**
 * Fastify's `trustProxy` option. Fastify 5 drops it from `initialConfig` (its config schema has no such key),
 * so read it from the options object Fastify keeps on the instance (symbol 'fastify.options').
 */
function fastifyTrustProxy (fastify: FastifyInstance): unknown {
  for (let o: object | null = fastify; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    for (const symbol of Object.getOwnPropertySymbols(o)) {
      if (symbol.description === 'fastify.options') {
        return ((o as Record<symbol, unknown>)[symbol] as { trustProxy?: unknown } | undefined)?.trustProxy
      }
    }
  }
  return (fastify.initialConfig as { trustProxy?: unknown }).trustProxy
}

const plugin: FastifyPluginAsync<WebSocketPluginOptions> = async function fastifyRfc6455 (fastify, options) {
  const base = resolveOptions(options, DEFAULTS, '', false)
  const topics = (options as WebSocketPluginOptions).topics
  if (topics !== undefined && (typeof topics !== 'object' || topics === null || typeof topics.publish !== 'function' ||
      typeof topics.subscribe !== 'function' || typeof topics.unsubscribe !== 'function' || typeof topics.subscriberCount !== 'function')) {
    throw new FST_WS_INVALID_OPTION('topics', 'expected a TopicBroker (subscribe, unsubscribe, publish, subscriberCount)')
  }
  const server = new WebSocketServer(topics ?? new MemoryTopics())
  const state: PluginState = { server, trust: compileTrust(fastifyTrustProxy(fastify)), base }
  const timer = base.handshakeTimeout > 0
    ? new HandshakeTimer(base.handshakeTimeout, (pending) => {
      fastify.log.warn('WebSocket upgrade timed out before its hooks finished (see the "handshakeTimeout" option)')
      pending.socket.destroy()
    })
    : null
  const onUpgrade = createUpgradeListener(fastify, server, timer)

  const policies: Array<{ ports: ReadonlySet<number> | null, url: string }> = []
  fastify.addHook('onRoute', createOnRoute(state, (ports, url) => { policies.push({ ports, url }) }))
  fastify.decorate('websocketServer', server)
  fastify.decorate('injectWS', async function (path: string, opts?: InjectWSOptions) {
    // Like app.inject(): routes registered after the plugin exist only once the app has booted.
    await fastify.ready()
    return injectWS(onUpgrade as Parameters<typeof injectWS>[0], path, opts)
  })

  fastify.server.on('upgrade', onUpgrade)
  fastify.addHook('onListen', function warnAboutPorts (done) {
    for (const address of fastify.addresses()) {
      if (typeof address === 'string') continue
      // A GET route's HEAD twin goes through onRoute too: list each url once.
      const refused = [...new Set(policies.filter((p) => p.ports !== null && !p.ports.has(address.port)).map((p) => p.url))]
      if (refused.length > 0) {
        fastify.log.warn({ port: address.port, routes: refused },
          `WebSocket upgrades on port ${address.port} will be refused with 403 by the "ports" option (default [80, 443]); ` +
          `set ports: [${address.port}] or ports: 'any' to accept them`)
        break
      }
    }
    done()
  })
  fastify.addHook('preClose', function closeSockets (done) {
    server._closeAll().then(() => done(), done)
  })
  fastify.addHook('onClose', function removeUpgradeListener (_instance, done) {
    fastify.server.removeListener('upgrade', onUpgrade)
    if (timer !== null) timer.stop()
    done()
  })
}

export const fastifyWebSocket = fp(plugin, { fastify: '5.x', name: 'fastify-rfc6455' })
export default fastifyWebSocket

export { WebSocket } from './socket/websocket.js'
export type { WebSocketEvents, SendData, SendOptions, IteratedMessage, ReadyState } from './socket/websocket.js'
export { WebSocketServer } from './plugin/server.js'
export type { PublishOptions } from './plugin/server.js'
export type { TopicBroker } from './plugin/topics.js'
export { MemoryTopics } from './plugin/topics.js'
export type { WebSocketPluginOptions, RouteWebSocketOptions, WebSocketLimits, WebSocketPolicy, SelectProtocol } from './plugin/options.js'
export type { OriginsOption, OriginFunction, OriginPattern } from './http/origin.js'
export type { PortsOption } from './http/ports.js'
export type { HeartbeatOptions } from './protocol/connection.js'
export type { InjectWSOptions, HandshakeRejectedError } from './testing/inject.js'
export type { PerMessageDeflateOptions } from './extensions/permessage-deflate/codec.js'
export type { WebSocketError } from './errors.js'
export * as errors from './errors.js'
