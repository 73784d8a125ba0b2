/**
 * The Origin allowlist: protection against cross-site WebSocket hijacking.
 * Browsers always send Origin on a WebSocket handshake, and a page cannot
 * forge it; checking it is what keeps evil.example from riding a user's
 * cookies into our socket.
 */
import type { FastifyRequest } from 'fastify'

export type OriginFunction = (origin: string, request: FastifyRequest) => boolean | Promise<boolean>
/** An exact origin ('https://app.example.com'), a wildcard ('https://*.example.com'), 'null', a RegExp, or a list of them. */
export type OriginPattern = string | RegExp
export type OriginsOption = OriginPattern | readonly OriginPattern[] | OriginFunction

/** A parsed origin: scheme, lower-case host, port (default ports made explicit). */
export interface ParsedOrigin {
  scheme: string
  host: string
  port: number
}

const DEFAULT_PORTS: Record<string, number> = { http: 80, https: 443, ws: 80, wss: 443 }
/** scheme "://" host [":" port], nothing else: no userinfo, path, query or fragment. */
const ORIGIN_SHAPE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(\[[0-9a-fA-F:.]+\]|[^\s/?#@[\]:]+)(?::(\d{1,5}))?$/
const HOST_LABELS = /^[a-z0-9-]+(\.[a-z0-9-]+)*$/

export function defaultPort (scheme: string): number | undefined {
  return DEFAULT_PORTS[scheme]
}

/** Parse an origin strictly (RFC 6454 serialization, case-insensitive). Returns null for anything else. */
export function parseOrigin (origin: string): ParsedOrigin | null {
  if (origin.length > 2048) return null
  const m = ORIGIN_SHAPE.exec(origin)
  if (m === null) return null
  const scheme = m[1]!.toLowerCase()
  const host = m[2]!.toLowerCase()
  const explicit = m[3]
  const port = explicit !== undefined ? Number(explicit) : DEFAULT_PORTS[scheme]
  if (port === undefined || port > 65535) return null
  if (host[0] !== '[' && !HOST_LABELS.test(host)) return null
  return { scheme, host, port }
}

/** Parse a Host header value ("name", "name:port", "[v6]:port"). */
export function parseHost (value: string): { host: string, port: number | undefined } | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s/?#@[\]:]+)(?::(\d{1,5}))?$/.exec(value)
  if (m === null) return null
  return { host: m[1]!.toLowerCase(), port: m[2] !== undefined ? Number(m[2]) : undefined }
}

type Matcher = (origin: string, parsed: ParsedOrigin | null) => boolean

function compilePattern (pattern: OriginPattern): Matcher {
  if (pattern instanceof RegExp) {
    const re = pattern
    return (origin) => {
      re.lastIndex = 0
      return re.test(origin)
    }
  }
  if (pattern === 'null') return (origin) => origin === 'null'
  const wildcard = pattern.includes('://*.')
  const parsed = parseOrigin(wildcard ? pattern.replace('://*.', '://') : pattern)
  if (parsed === null) throw new Error(`"${pattern}" is not an origin (scheme://host[:port])`)
  if (!wildcard) {
    return (_origin, o) => o !== null && o.scheme === parsed.scheme && o.host === parsed.host && o.port === parsed.port
  }
  const suffix = '.' + parsed.host
  return (_origin, o) => o !== null && o.scheme === parsed.scheme && o.port === parsed.port &&
    o.host.length > suffix.length && o.host.endsWith(suffix)
}

export type OriginCheck = (origin: string, request: FastifyRequest) => boolean | Promise<boolean>

/** Compile the option once, at registration. Throws (with a message) on an unusable pattern. */
export function compileOrigins (option: OriginsOption): OriginCheck {
  if (typeof option === 'function') return option
  const patterns: readonly OriginPattern[] = Array.isArray(option) ? option : [option as OriginPattern]
  const matchers = patterns.map(compilePattern)
  return (origin) => {
    const parsed = parseOrigin(origin)
    for (const match of matchers) if (match(origin, parsed)) return true
    return false
  }
}

/**
 * The default: same-origin. The Origin's scheme-default-aware host and port must equal the Host header's,
 * and the Host's port must be the port the client really connected to (`connectionPort`).
 */
export function isSameOrigin (origin: string, hostHeader: string | undefined, connectionPort: number | undefined): boolean {
  const o = parseOrigin(origin)
  if (o === null || hostHeader === undefined) return false
  const h = parseHost(hostHeader)
  if (h === null) return false
  const hostPort = h.port ?? DEFAULT_PORTS[o.scheme]
  if (h.host !== o.host || hostPort !== o.port) return false
  return connectionPort === undefined || connectionPort === hostPort
}
