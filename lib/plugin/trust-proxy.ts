/**
 * The one place that reads Fastify's `trustProxy` setting. Fastify 5 does not expose it: its initialConfig schema
 * has no such key, so it is read from the options object Fastify keeps on the instance under the symbol described
 * 'fastify.options' (an internal: check it on every Fastify major upgrade; test/plugin/ports.test.ts covers it).
 */
import type { FastifyInstance } from 'fastify'

/**
 * Fastify's `trustProxy` option. Fastify 5 drops it from `initialConfig` (its config schema has no such key),
 * so read it from the options object Fastify keeps on the instance (symbol 'fastify.options').
 */
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

