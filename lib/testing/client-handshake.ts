/**
 * The client half of the opening handshake (RFC 6455 §4.1), for injectWS: the request headers it sends, and
 * the checks a client makes on the response before it may speak WebSocket (101, Upgrade, Connection,
 * Sec-WebSocket-Accept, a protocol it offered, an extension response it can accept).
 */
import type { OutgoingHttpHeaders } from 'node:http'
import { acceptKey, hasToken } from '../http/handshake.js'
import { parseExtensions } from '../http/extension-header.js'
import { acceptClientResponse, clientOffer } from '../extensions/permessage-deflate/negotiation.js'
import type { NegotiatedDeflate, PerMessageDeflateOptions } from '../extensions/permessage-deflate/options.js'
import { DEFAULTS } from '../plugin/options.js'
import type { ConnectionOptions } from '../protocol/connection.js'

/**
 * The engine's options in the client role (injectWS, the client's Node transport): the plugin's defaults, no
 * heartbeat (the server pings), no drain timeout.
 */
export function clientConnectionOptions (maxPayload: number, deflate: ConnectionOptions['deflate']): ConnectionOptions {
  return {
    isServer: false,
    maxPayload,
    closeTimeout: DEFAULTS.closeTimeout,
    sendHighWaterMark: DEFAULTS.sendHighWaterMark,
    maxBufferedAmount: DEFAULTS.maxBufferedAmount,
    drainTimeout: 0,
    inboundHighWaterMark: DEFAULTS.inboundHighWaterMark,
    heartbeat: null,
    deflate
  }
}

export interface ClientOffer {
  /** The port the connection arrives on: the Host header names it unless it is 80. */
  port: number
  /** Subprotocols to offer, in order. */
  protocols?: readonly string[]
  /** Origin header; none when undefined. */
  origin?: string
  /** permessage-deflate to offer (validated options), or null. */
  deflate: Required<PerMessageDeflateOptions> | null
  /** Extra headers; they override the generated ones (names are case-insensitive). */
  headers?: OutgoingHttpHeaders
}

/** The request headers of the handshake, lower-case names, one string per header. */
export function buildRequestHeaders (key: string, offer: ClientOffer): Record<string, string> {
  const headers: Record<string, string> = {
    host: offer.port === 80 ? 'localhost' : `localhost:${offer.port}`,
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': key
  }
  if (offer.protocols !== undefined && offer.protocols.length > 0) headers['sec-websocket-protocol'] = offer.protocols.join(', ')
  if (offer.origin !== undefined) headers.origin = offer.origin
  if (offer.deflate !== null) headers['sec-websocket-extensions'] = clientOffer(offer.deflate)
  for (const [name, value] of Object.entries(offer.headers ?? {})) {
    if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value)
  }
  return headers
}

export interface ResponseHead {
  /** The status code, 0 when the status line is not HTTP/1.1 with three digits. */
  status: number
  /** Lower-case names; a repeated header keeps its last value. */
  headers: Record<string, string>
  /** What followed the head in the bytes read so far: the body, or the first frames after a 101. */
  rest: Buffer
}

/** Parse the response head out of the bytes read so far; null while it is incomplete. */
export function parseResponseHead (received: Buffer): ResponseHead | null {
  const end = received.indexOf('\r\n\r\n')
  if (end === -1) return null
  const lines = received.subarray(0, end).toString('latin1').split('\r\n')
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0)
  const headers: Record<string, string> = {}
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string
    const colon = line.indexOf(':')
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status, headers, rest: received.subarray(end + 4) }
}

export interface AcceptedHandshake {
  /** The subprotocol the server chose, or ''. */
  protocol: string
  /** The Sec-WebSocket-Extensions response, or ''. */
  extensions: string
  /** The negotiated permessage-deflate parameters, or null when the server did not accept the offer. */
  params: NegotiatedDeflate | null
}

/**
 * Check a 101 response against what was offered, as a client must before it sends a frame.
 * Throws an Error saying what is wrong; the caller fails the connection.
 */
export function checkResponse (
  head: ResponseHead, key: string, offer: { protocols?: readonly string[], deflate: Required<PerMessageDeflateOptions> | null }
): AcceptedHandshake {
  const h = head.headers
  if (head.status !== 101) throw new Error(`Expected a 101 response, got ${head.status}`)
  if (!hasToken(h.upgrade, 'websocket')) throw new Error('Missing "Upgrade: websocket" in the server response')
  if (!hasToken(h.connection, 'upgrade')) throw new Error('Missing "Connection: Upgrade" in the server response')
  if (h['sec-websocket-accept'] !== acceptKey(key)) throw new Error('Invalid Sec-WebSocket-Accept in the server response')
  const protocol = h['sec-websocket-protocol'] ?? ''
  if (protocol !== '' && !(offer.protocols ?? []).includes(protocol)) {
    throw new Error(`Server selected a subprotocol that was not offered: ${protocol}`)
  }
  const extensions = h['sec-websocket-extensions'] ?? ''
  let params: NegotiatedDeflate | null = null
  if (extensions !== '') {
    const offers = parseExtensions(extensions)
    params = offer.deflate !== null && offers !== null ? acceptClientResponse(offers, offer.deflate) : null
    if (params === null) throw new Error(`Server negotiated an extension that was not offered: ${extensions}`)
  }
  return { protocol, extensions, params }
}
