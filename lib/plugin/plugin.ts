/**
 * The plugin itself: validates the plugin options once, creates the connection registry and the server object,
 * and wires the route hook, the upgrade listener, the boot-time route check, the start-up port warning and
 * shutdown into the Fastify instance.
 */
import type { FastifyPluginAsync } from 'fastify'
import { resolveOptions, DEFAULTS, type WebSocketPluginOptions, resolveTopicBroker } from './options.js'
import { compileTrust } from '../http/ports.js'
import { createWebSocketServer } from './server.js'
import { compileSerializer } from './message-schemas.js'
import { ConnectionRegistry } from './registry.js'
import { assertAllServed } from './route-guard.js'
import { MemoryTopics } from '../topics/memory.js'
import type { TopicBroker } from '../topics/types.js'
import { createUpgradeListener } from './upgrade.js'
import { advertiseConnectProtocol, createConnectListener, isHttp2Server, refuseStreamToPlainRoute, StreamSessions } from './http2.js'
import { HandshakeTimer } from './handshake-timer.js'
import { createOnRoute } from './route.js'
import { injectWS, type InjectWSOptions } from '../testing/inject.js'
import type { PluginState } from './accept.js'
import { FST_WS_ALREADY_REGISTERED } from '../errors.js'
import { fastifyTrustProxy } from './fastify-options.js'
import './route-types.js'

export const plugin: FastifyPluginAsync<WebSocketPluginOptions> = async function fastifyRfc6455 (fastify, options) {
  // A second registration below the first would wrap the same routes twice (and shadow the server object).
  if (fastify.hasDecorator('websocketServer')) throw new FST_WS_ALREADY_REGISTERED()
  const base = resolveOptions(options, DEFAULTS, '', false)
  const registry = new ConnectionRegistry(base.maxConnections)
  const broker: TopicBroker = resolveTopicBroker((options as WebSocketPluginOptions).topics) ?? new MemoryTopics()
  if (broker.start !== undefined) broker.start({ log: fastify.log })
  const topicNames = { longest: base.maxTopicLength }
  const server = createWebSocketServer(broker, registry.clients, (schema) => compileSerializer(fastify, schema), fastify.log, topicNames)
  const state: PluginState = { registry, topics: broker, topicNames, trust: compileTrust(fastifyTrustProxy(fastify)), base }
  const timer = base.handshakeTimeout > 0
    ? new HandshakeTimer(base.handshakeTimeout, (pending) => {
      fastify.log.warn('WebSocket upgrade timed out before its hooks finished (see the "handshakeTimeout" option)')
      pending.socket.destroy()
    })
    : null
  const onUpgrade = createUpgradeListener(fastify, registry, timer)
  // HTTP/2 servers (RFC 8441): extended CONNECT streams are routed to the same routes (http2.ts).
  const http2Sessions = isHttp2Server(fastify.server) ? new StreamSessions() : null
  const onConnect = http2Sessions !== null ? createConnectListener(fastify, registry, timer, http2Sessions) : null

  const policies: Array<{ ports: ReadonlySet<number> | null, url: string }> = []
  fastify.addHook('onRoute', createOnRoute(state, (ports, url) => { policies.push({ ports, url }) }))
  fastify.decorate('websocketServer', server)
  fastify.decorate('injectWS', async function (path: string, opts?: InjectWSOptions) {
    // Like app.inject(): routes registered after the plugin exist only once the app has booted.
    await fastify.ready()
    return injectWS(onUpgrade as Parameters<typeof injectWS>[0], path, opts)
  })

  fastify.server.on('upgrade', onUpgrade)
  if (onConnect !== null) {
    fastify.server.on('connect', onConnect)
    fastify.addHook('onRequest', refuseStreamToPlainRoute)
  }
  fastify.addHook('onReady', function checkWebSocketRoutes (done) {
    // A WebSocket route this plugin does not serve (sibling context, declared before the plugin): FST_WS_PLUGIN_MISSING.
    try {
      assertAllServed(fastify)
    } catch (err) {
      done(err as Error)
      return
    }
    // RFC 8441 is advertised only by an app that has WebSocket routes: browsers use it as soon as it is.
    if (onConnect !== null && policies.length > 0) advertiseConnectProtocol(fastify.server)
    done()
  })
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
    registry.closeAll().then(() => {
      // Every WebSocket has closed (1001, then the close handshake or closeTimeout): GOAWAY on their HTTP/2 sessions.
      if (http2Sessions !== null) http2Sessions.goAway()
      done()
    }, done)
  })
  fastify.addHook('onClose', function removeUpgradeListener (_instance, done) {
    fastify.server.removeListener('upgrade', onUpgrade)
    if (onConnect !== null) fastify.server.removeListener('connect', onConnect)
    if (timer !== null) timer.stop()
    // Every socket is closed by now (preClose): the broker can let go of its connections and timers.
    if (broker.close === undefined) {
      done()
      return
    }
    broker.close().then(() => done(), (err: unknown) => {
      fastify.log.error({ err }, 'WebSocket topic broker failed to close')
      done()
    })
  })
}

