/**
 * FST_WS_PLUGIN_MISSING: a WebSocket route (`websocket` or `wsHandler`) that no registration of this plugin
 * serves fails the boot, instead of reaching Fastify as a plain route whose handler gets `(request, reply)` and
 * answers upgrades with "500 socket.send is not a function".
 *
 * Why such routes exist: the plugin sees routes through an onRoute hook, and Fastify runs a context's onRoute hooks
 * only for routes of that context and of child contexts created after the hook was added (a child copies its
 * parent's hooks when it is created). So the plugin never sees a route in a sibling context, nor one declared
 * before the plugin was registered (in the same context or in a child that already existed).
 *
 * How they are found, with public Fastify API only: Fastify publishes every new instance on the documented
 * diagnostics channel 'fastify.initialization', where hooks may still be added. Every root instance created after
 * this module was loaded gets one onRoute hook that notes its WebSocket routes (every context inherits it: it is
 * the root's first hook). The plugin's own onRoute hook marks the routes it serves; the plugin's onReady hook
 * throws FST_WS_PLUGIN_MISSING naming any noted route left unmarked, so `ready()`/`listen()` reject.
 *
 * An app that never registers this plugin is never checked (another plugin may serve `websocket: true`). An
 * instance created before this module was first imported is not watched (imports are evaluated before the code
 * that calls `Fastify()`, so this only happens with a late dynamic import).
 */
import { subscribe } from 'node:diagnostics_channel'
import type { FastifyInstance, RouteOptions } from 'fastify'
import { FST_WS_PLUGIN_MISSING } from '../errors.js'

export interface WebSocketRouteFields {
  websocket?: unknown
  wsHandler?: unknown
}

interface NotedRoute {
  url: string
  options: object
}

/** WebSocket routes of each app (keyed by its HTTP server, which all of the app's contexts share). */
const noted = new WeakMap<object, NotedRoute[]>()
/** Route options objects a registration of the plugin has taken. */
const served = new WeakSet<object>()

/** Whether a route asks for WebSocket upgrades. */
export function isWebSocketRoute (routeOptions: WebSocketRouteFields): boolean {
  const { websocket, wsHandler } = routeOptions
  return (websocket !== undefined && websocket !== false) || wsHandler !== undefined
}

function noteWebSocketRoute (this: FastifyInstance, routeOptions: RouteOptions & WebSocketRouteFields): void {
  if (!isWebSocketRoute(routeOptions)) return
  noted.get(this.server)?.push({ url: routeOptions.url, options: routeOptions })
}

function watch (message: unknown): void {
  const fastify = (message as { fastify?: FastifyInstance } | null)?.fastify
  if (fastify === undefined || typeof fastify.addHook !== 'function' || fastify.server === undefined) return
  noted.set(fastify.server, [])
  fastify.addHook('onRoute', noteWebSocketRoute)
}

subscribe('fastify.initialization', watch)

/** The plugin's onRoute hook took this route (called with the options object Fastify passes to every hook). */
export function markServed (routeOptions: object): void {
  served.add(routeOptions)
}

/** Throws FST_WS_PLUGIN_MISSING if a WebSocket route of this app is not served by any registration of the plugin. */
export function assertAllServed (fastify: FastifyInstance): void {
  const routes = noted.get(fastify.server)
  if (routes === undefined) return
  const missing = new Set<string>()
  for (const route of routes) if (!served.has(route.options)) missing.add(route.url)
  if (missing.size > 0) throw new FST_WS_PLUGIN_MISSING([...missing].join(', '))
  // Routes cannot be added once the app is ready: nothing more to keep.
  routes.length = 0
}
