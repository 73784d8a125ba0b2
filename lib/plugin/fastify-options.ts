/**
 * The one place that reads options given to `Fastify()` that Fastify does not expose, and the only code in the
 * plugin that looks at Fastify's symbols. Fastify 5 keeps the server options object on the instance under the
 * symbol described 'fastify.options'; its public initialConfig leaves out `trustProxy`, `ajv` and `serializerOpts`.
 * An internal: check it on every Fastify major upgrade (test/plugin/ports.test.ts covers trustProxy,
 * test/plugin/message-schemas.test.ts the ajv options).
 *
 * Why `trustProxy` is needed at all: what Fastify computes per request does not do instead. `request.port` and
 * `request.host` come from the Host (or, behind a trusted proxy, X-Forwarded-Host) header, which the client
 * controls, and nothing public says whether the connection came from a trusted proxy. The port policy checks the
 * connection's local port unless the peer is a trusted proxy (http/ports.ts clientPort), so it needs the rule.
 * Why `ajv`/`serializerOpts`: message schemas are compiled with the compilers Fastify would build by default, with
 * the same options (plugin/message-schemas.ts), when Fastify has not built them yet.
 */
import type { FastifyInstance } from 'fastify'

/** An option as given to `Fastify()` (undefined when not set). */
export function fastifyServerOption (fastify: FastifyInstance, name: 'trustProxy' | 'ajv' | 'serializerOpts'): unknown {
  for (let o: object | null = fastify; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    for (const symbol of Object.getOwnPropertySymbols(o)) {
      if (symbol.description === 'fastify.options') {
        return ((o as Record<symbol, unknown>)[symbol] as Record<string, unknown> | undefined)?.[name]
      }
    }
  }
  return (fastify.initialConfig as Record<string, unknown>)[name]
}

/** Fastify's `trustProxy` option. */
export function fastifyTrustProxy (fastify: FastifyInstance): unknown {
  return fastifyServerOption(fastify, 'trustProxy')
}
