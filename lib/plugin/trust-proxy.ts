/**
 * The one place that reads Fastify's `trustProxy` setting, and the only code in the plugin that looks at Fastify's
 * symbols. Fastify 5 does not expose the setting: its initialConfig schema has no such key, so it is read from the
 * options object Fastify keeps on the instance under the symbol described 'fastify.options' (an internal: check it
 * on every Fastify major upgrade; test/plugin/ports.test.ts covers it).
 *
 * What Fastify computes per request does not do instead: `request.port` and `request.host` come from the Host (or,
 * behind a trusted proxy, X-Forwarded-Host) header, which the client controls, and nothing public says whether the
 * connection came from a trusted proxy. The port policy checks the connection's local port unless the peer is a
 * trusted proxy (http/ports.ts clientPort), so it needs the trust rule itself.
 */
import type { FastifyInstance } from 'fastify'

/** Fastify's `trustProxy` option, as given to `Fastify()` (undefined when not set). */
export function fastifyTrustProxy (fastify: FastifyInstance): unknown {
  for (let o: object | null = fastify; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    for (const symbol of Object.getOwnPropertySymbols(o)) {
      if (symbol.description === 'fastify.options') {
        return ((o as Record<symbol, unknown>)[symbol] as { trustProxy?: unknown } | undefined)?.trustProxy
      }
    }
  }
  return (fastify.initialConfig as { trustProxy?: unknown }).trustProxy
}
