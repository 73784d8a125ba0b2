/**
 * Options: their types, their defaults, and their validation, done once at
 * registration (plugin options) or route definition (route options).
 */
import type { FastifyRequest } from 'fastify'
import { FST_WS_INVALID_OPTION } from '../errors.js'
import { compileOrigins, type OriginCheck, type OriginsOption } from '../http/origin.js'
import type { PortsOption } from '../http/ports.js'
import { isToken } from '../http/tokens.js'
import type { HeartbeatOptions } from '../protocol/connection.js'
import { DEFAULT_DEFLATE_OPTIONS, type PerMessageDeflateOptions } from '../extensions/permessage-deflate/options.js'
import type { TopicBroker } from '../topics/types.js'
import type { MessagesOption } from './message-schemas.js'

/** Limits and timers; each can be set for the plugin and overridden per route. */
export interface WebSocketLimits {
  /** Largest message accepted, in bytes (after decompression). Over it: close 1009. Default 1 MiB. */
  maxPayload?: number
  /** How long to wait for the peer to finish the closing handshake before destroying the TCP connection (ms). Default 5000. */
  closeTimeout?: number
  /** Outbound bytes buffered before send() returns false and reading from the peer pauses. Default 1 MiB. */
  sendHighWaterMark?: number
  /** Outbound bytes buffered at which a peer that does not read is closed with 1008. Default 16 MiB. */
  maxBufferedAmount?: number
  /** How long a socket may stay over sendHighWaterMark before it is closed with 1008 (ms, 0 = never). Default 30000. */
  drainTimeout?: number
  /** Bytes of received messages held for a handler that is not consuming; past it, reading pauses. Default 1 MiB. */
  inboundHighWaterMark?: number
  /** Ping idle sockets and terminate those that do not answer. Default false. */
  heartbeat?: false | HeartbeatOptions
  /** Open sockets allowed (per plugin, or per route); past it upgrades get 503. Default Infinity. */
  maxConnections?: number
  /** permessage-deflate (RFC 7692). Default false. */
  perMessageDeflate?: boolean | PerMessageDeflateOptions
  /** Topics one socket may be subscribed to at once; past it subscribe() throws FST_WS_TOPIC_LIMIT. Default 1000. */
  maxTopicsPerSocket?: number
  /** Longest topic name subscribe() accepts, in UTF-16 code units (`topic.length`); else FST_WS_TOPIC_LIMIT. Default 256. */
  maxTopicLength?: number
}

/** Who may connect. */
export interface WebSocketPolicy {
  /** Allowed origins. Default: same-origin (the Origin must match the Host header). */
  origins?: OriginsOption
  /** Refuse handshakes without an Origin header (non-browser clients). Default false. */
  requireOrigin?: boolean
  /** Ports upgrades are accepted on. Default [80, 443]. */
  ports?: PortsOption
}

export type SelectProtocol<P extends string = string> = (offered: readonly string[], request: FastifyRequest) => P | '' | undefined | null

export interface WebSocketPluginOptions extends WebSocketLimits, WebSocketPolicy {
  /** Default subprotocols for every route, in order of preference. */
  protocols?: readonly string[]
  /** Refuse (400) a client that offers only protocols the route does not speak. Default true. */
  protocolRequired?: boolean
  /** Where topic subscriptions live. Default: in memory, in this process. */
  topics?: TopicBroker
  /** Longest time from the upgrade request to the 101 (your hooks run in it); past it the socket is destroyed (ms, 0 = none). Default 30000. */
  handshakeTimeout?: number
}

export interface RouteWebSocketOptions<P extends readonly string[] = readonly string[], M extends MessagesOption = MessagesOption> extends WebSocketLimits, WebSocketPolicy {
  /** Subprotocols this route speaks, in order of preference; `socket.protocol` is typed from them. */
  protocols?: P
  /** Pick the protocol yourself; return '' (or nothing) for none. */
  selectProtocol?: SelectProtocol<P[number]>
  protocolRequired?: boolean
  /**
   * Schemas of the messages this route receives and sends (JSON in text frames), compiled with the instance's
   * validator and serializer compilers; with a type provider, the socket's messages are typed from them.
   */
  messages?: M
}

export interface ResolvedOptions {
  originCheck: OriginCheck | null
  requireOrigin: boolean
  ports: ReadonlySet<number> | null
  protocols: readonly string[]
  selectProtocol: SelectProtocol | null
  protocolRequired: boolean
  messages: MessagesOption | null
  maxPayload: number
  closeTimeout: number
  sendHighWaterMark: number
  maxBufferedAmount: number
  drainTimeout: number
  inboundHighWaterMark: number
  heartbeat: HeartbeatOptions | null
  maxConnections: number
  perMessageDeflate: Required<PerMessageDeflateOptions> | null
  handshakeTimeout: number
  maxTopicsPerSocket: number
  maxTopicLength: number
}

export const DEFAULTS: ResolvedOptions = {
  originCheck: null,
  requireOrigin: false,
  ports: new Set([80, 443]),
  protocols: [],
  selectProtocol: null,
  protocolRequired: true,
  messages: null,
  maxPayload: 1024 * 1024,
  closeTimeout: 5000,
  sendHighWaterMark: 1024 * 1024,
  maxBufferedAmount: 16 * 1024 * 1024,
  drainTimeout: 30_000,
  inboundHighWaterMark: 1024 * 1024,
  heartbeat: null,
  maxConnections: Infinity,
  perMessageDeflate: null,
  handshakeTimeout: 30_000,
  maxTopicsPerSocket: 1000,
  maxTopicLength: 256
}

const PLUGIN_KEYS = new Set(['origins', 'requireOrigin', 'ports', 'protocols', 'protocolRequired', 'maxPayload',
  'closeTimeout', 'sendHighWaterMark', 'maxBufferedAmount', 'drainTimeout', 'inboundHighWaterMark', 'heartbeat',
  'maxConnections', 'perMessageDeflate', 'topics', 'handshakeTimeout', 'maxTopicsPerSocket', 'maxTopicLength'])
const ROUTE_KEYS = new Set([...PLUGIN_KEYS, 'selectProtocol', 'messages'])
// Plugin-wide only: topics are shared, and the handshake timer runs before the route is known.
ROUTE_KEYS.delete('topics')
ROUTE_KEYS.delete('handshakeTimeout')

/** A short description of a wrong option value, for FST_WS_INVALID_OPTION messages. */
export function describe (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' || typeof value === 'function' ? typeof value : String(value)
}

function fail (name: string, why: string): never {
  throw new FST_WS_INVALID_OPTION(name, why)
}

/** `where` prefixes the key in the error: '' or a path ending in '.'. */
function rejectUnknownKeys (o: Record<string, unknown>, known: ReadonlySet<string>, where: string): void {
  for (const key of Object.keys(o)) {
    if (!known.has(key)) fail(where + key, `unknown option (known: ${[...known].join(', ')})`)
  }
}

function positiveInt (value: unknown, name: string, allowZero = false, allowInfinity = false): number {
  if (allowInfinity && value === Infinity) return Infinity
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) {
    fail(name, `expected a${allowZero ? ' non-negative' : ' positive'} integer${allowInfinity ? ' or Infinity' : ''}, got ${describe(value)}`)
  }
  return value
}

/**
 * Validate `input` (plugin options when `base` is DEFAULTS, else route options) and merge it over `base`.
 * `where` prefixes option names in errors, e.g. 'websocket.maxPayload' for a route.
 */
export function resolveOptions (input: unknown, base: ResolvedOptions, where: string, route: boolean): ResolvedOptions {
  if (input === undefined || input === true) return base
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    fail(where === '' ? 'options' : where.replace(/\.$/, ''), `expected an object, got ${describe(input)}`)
  }
  const o = input as Record<string, unknown>
  rejectUnknownKeys(o, route ? ROUTE_KEYS : PLUGIN_KEYS, where)
  const out: ResolvedOptions = { ...base }
  if (o.origins !== undefined) {
    const v = o.origins
    const ok = typeof v === 'string' || v instanceof RegExp || typeof v === 'function' ||
      (Array.isArray(v) && v.every((p) => typeof p === 'string' || p instanceof RegExp))
    if (!ok) fail(where + 'origins', `expected a string, RegExp, function or array of strings/RegExps, got ${describe(v)}`)
    try {
      out.originCheck = compileOrigins(v as OriginsOption)
    } catch (err) {
      fail(where + 'origins', (err as Error).message)
    }
  }
  if (o.requireOrigin !== undefined) out.requireOrigin = bool(o.requireOrigin, where + 'requireOrigin')
  if (o.ports !== undefined) {
    const v = o.ports
    if (v === 'any') out.ports = null
    else if (Array.isArray(v) && v.length > 0 && v.every((p) => Number.isInteger(p) && p >= 0 && p <= 65535)) out.ports = new Set(v as number[])
    else fail(where + 'ports', `expected 'any' or a non-empty array of port numbers, got ${describe(v)}`)
  }
  if (o.protocols !== undefined) {
    const v = o.protocols
    if (!Array.isArray(v) || !v.every((p) => typeof p === 'string' && isToken(p))) {
      fail(where + 'protocols', 'expected an array of protocol names (RFC 7230 tokens)')
    }
    if (new Set(v).size !== v.length) fail(where + 'protocols', 'duplicate protocol name')
    out.protocols = [...v] as string[]
  }
  if (o.selectProtocol !== undefined) {
    if (typeof o.selectProtocol !== 'function') fail(where + 'selectProtocol', `expected a function, got ${describe(o.selectProtocol)}`)
    out.selectProtocol = o.selectProtocol as SelectProtocol
  }
  if (o.protocolRequired !== undefined) out.protocolRequired = bool(o.protocolRequired, where + 'protocolRequired')
  if (o.messages !== undefined) out.messages = messagesOption(o.messages, where + 'messages')
  if (o.maxPayload !== undefined) out.maxPayload = positiveInt(o.maxPayload, where + 'maxPayload')
  if (o.closeTimeout !== undefined) out.closeTimeout = positiveInt(o.closeTimeout, where + 'closeTimeout')
  if (o.sendHighWaterMark !== undefined) out.sendHighWaterMark = positiveInt(o.sendHighWaterMark, where + 'sendHighWaterMark')
  if (o.maxBufferedAmount !== undefined) out.maxBufferedAmount = positiveInt(o.maxBufferedAmount, where + 'maxBufferedAmount')
  if (o.drainTimeout !== undefined) out.drainTimeout = positiveInt(o.drainTimeout, where + 'drainTimeout', true)
  if (o.inboundHighWaterMark !== undefined) out.inboundHighWaterMark = positiveInt(o.inboundHighWaterMark, where + 'inboundHighWaterMark')
  if (o.handshakeTimeout !== undefined) out.handshakeTimeout = positiveInt(o.handshakeTimeout, where + 'handshakeTimeout', true)
  if (o.maxConnections !== undefined) out.maxConnections = positiveInt(o.maxConnections, where + 'maxConnections', false, true)
  if (o.maxTopicsPerSocket !== undefined) out.maxTopicsPerSocket = positiveInt(o.maxTopicsPerSocket, where + 'maxTopicsPerSocket', false, true)
  if (o.maxTopicLength !== undefined) out.maxTopicLength = positiveInt(o.maxTopicLength, where + 'maxTopicLength', false, true)
  if (o.heartbeat !== undefined) {
    const v = o.heartbeat
    if (v === false) out.heartbeat = null
    else if (typeof v === 'object' && v !== null) {
      const hb = v as Record<string, unknown>
      out.heartbeat = {
        interval: positiveInt(hb.interval, where + 'heartbeat.interval'),
        timeout: positiveInt(hb.timeout, where + 'heartbeat.timeout')
      }
    } else fail(where + 'heartbeat', `expected false or { interval, timeout }, got ${describe(v)}`)
  }
  if (o.perMessageDeflate !== undefined) {
    const v = o.perMessageDeflate
    if (v === false) out.perMessageDeflate = null
    else if (v === true) out.perMessageDeflate = validateDeflateOptions({}, where + 'perMessageDeflate')
    else if (typeof v === 'object' && v !== null) out.perMessageDeflate = validateDeflateOptions(v, where + 'perMessageDeflate')
    else fail(where + 'perMessageDeflate', `expected a boolean or an object, got ${describe(v)}`)
  }
  if (out.maxBufferedAmount < out.sendHighWaterMark) {
    fail(where + 'maxBufferedAmount', 'must be at least sendHighWaterMark')
  }
  return out
}

function bool (value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') fail(name, `expected a boolean, got ${describe(value)}`)
  return value
}

// --- permessage-deflate options (plugin, route and injectWS client) ---

const DEFLATE_KEYS = new Set(Object.keys(DEFAULT_DEFLATE_OPTIONS))

function intInRange (value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(name, `expected an integer from ${min} to ${max}, got ${describe(value)}`)
  }
  return value
}

/**
 * Validate permessage-deflate options and fill in the defaults. `true` and `undefined` mean "all defaults".
 * Throws FST_WS_INVALID_OPTION (a TypeError) naming the offending option, e.g. `perMessageDeflate.level`.
 */
const MESSAGE_KEYS = new Set(['receive', 'send', 'onInvalid'])

/** The `messages` route option: schemas are checked by their compiler when the app boots; here, only the shape. */
function messagesOption (value: unknown, name: string): MessagesOption {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(name, `expected { receive?, send?, onInvalid? }, got ${describe(value)}`)
  const o = value as Record<string, unknown>
  rejectUnknownKeys(o, MESSAGE_KEYS, name + '.')
  if (o.receive === undefined && o.send === undefined) fail(name, 'expected a receive or a send schema (or both)')
  for (const key of ['receive', 'send'] as const) {
    const schema = o[key]
    if (schema !== undefined && typeof schema !== 'object' && typeof schema !== 'boolean') fail(`${name}.${key}`, `expected a schema, got ${describe(schema)}`)
  }
  if (o.onInvalid !== undefined && o.onInvalid !== 'close' && o.onInvalid !== 'emit') fail(name + '.onInvalid', `expected 'close' or 'emit', got ${describe(o.onInvalid)}`)
  return o as MessagesOption
}

/** The `topics` plugin option: a TopicBroker, or undefined for the in-memory default. */
export function resolveTopicBroker (value: unknown): TopicBroker | undefined {
  if (value === undefined) return undefined
  const b = value as Partial<TopicBroker> | null
  if (typeof b !== 'object' || b === null || typeof b.publish !== 'function' || typeof b.subscribe !== 'function' ||
      typeof b.unsubscribe !== 'function' || typeof b.subscriberCount !== 'function' || typeof b.subscriberCounts !== 'function') {
    fail('topics', `expected a TopicBroker (subscribe, unsubscribe, publish, subscriberCount, subscriberCounts), got ${describe(value)}`)
  }
  return b as TopicBroker
}

export function validateDeflateOptions (opts: unknown, optionName: string): Required<PerMessageDeflateOptions> {
  const out: Required<PerMessageDeflateOptions> = { ...DEFAULT_DEFLATE_OPTIONS }
  if (opts === undefined || opts === true) return out
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
    fail(optionName, `expected true or an options object, got ${describe(opts)}`)
  }
  const o = opts as Record<string, unknown>
  const where = optionName + '.'
  rejectUnknownKeys(o, DEFLATE_KEYS, where)
  if (o.threshold !== undefined) out.threshold = positiveInt(o.threshold, where + 'threshold', true, true)
  if (o.serverNoContextTakeover !== undefined) out.serverNoContextTakeover = bool(o.serverNoContextTakeover, where + 'serverNoContextTakeover')
  if (o.clientNoContextTakeover !== undefined) out.clientNoContextTakeover = bool(o.clientNoContextTakeover, where + 'clientNoContextTakeover')
  if (o.serverMaxWindowBits !== undefined) out.serverMaxWindowBits = intInRange(o.serverMaxWindowBits, where + 'serverMaxWindowBits', 8, 15)
  if (o.clientMaxWindowBits !== undefined) out.clientMaxWindowBits = intInRange(o.clientMaxWindowBits, where + 'clientMaxWindowBits', 8, 15)
  if (o.level !== undefined) out.level = intInRange(o.level, where + 'level', -1, 9)
  if (o.memLevel !== undefined) out.memLevel = intInRange(o.memLevel, where + 'memLevel', 1, 9)
  if (o.concurrency !== undefined) out.concurrency = intInRange(o.concurrency, where + 'concurrency', 1, 1024)
  return out
}
