/**
 * The WebSocket handshake over HTTP/2 (RFC 8441): an extended CONNECT request (`:method CONNECT`,
 * `:protocol websocket`) on one stream, answered by a `200` on that stream. There is no Sec-WebSocket-Key and no
 * Sec-WebSocket-Accept (a stream cannot be confused with a plain HTTP exchange the way an HTTP/1.1 connection can);
 * Sec-WebSocket-Version, -Protocol and -Extensions keep their RFC 6455 meaning. Pure header grammar: the policies
 * (ports, Origin, subprotocol, extensions) are applied by the plugin for both HTTP versions alike.
 */
import { checkVersion, type Rejection } from './handshake.js'

/** The pseudo-headers and fields this module reads (Node's http2 header object, lower-case names). */
export interface Http2RequestHeaders {
  [name: string]: string | string[] | undefined
}

function single (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/**
 * What an HTTP/2 CONNECT asks for: 'websocket' (ours), 'other' (another `:protocol`, say a WebTransport or
 * CONNECT-UDP session) or 'tunnel' (a classic CONNECT, no `:protocol`: a proxy request). Upgrade tokens are
 * case-insensitive (RFC 9110 §7.8).
 */
export function connectKind (headers: Http2RequestHeaders): 'websocket' | 'other' | 'tunnel' {
  const protocol = single(headers[':protocol'])
  if (protocol === undefined) return 'tunnel'
  return protocol.toLowerCase() === 'websocket' ? 'websocket' : 'other'
}

/**
 * Validate an extended CONNECT for a WebSocket (RFC 8441 §4-5), once the router has found its route. Returns null
 * when it is acceptable, else why it is refused. Node's HTTP/2 layer has already refused a `:protocol` the server
 * did not advertise (SETTINGS_ENABLE_CONNECT_PROTOCOL) and malformed pseudo-headers.
 */
export function checkExtendedConnect (headers: Http2RequestHeaders): Rejection | null {
  if (single(headers[':method']) !== 'CONNECT' || connectKind(headers) !== 'websocket') {
    return { status: 400, reason: 'A WebSocket over HTTP/2 needs an extended CONNECT with :protocol websocket' }
  }
  const authority = single(headers[':authority'])
  if (authority === undefined || authority === '') return { status: 400, reason: 'Missing :authority pseudo-header' }
  const path = single(headers[':path'])
  if (path === undefined || path === '') return { status: 400, reason: 'Missing :path pseudo-header' }
  const scheme = single(headers[':scheme'])
  if (scheme === undefined || scheme === '') return { status: 400, reason: 'Missing :scheme pseudo-header' }
  // The stream's DATA frames are the WebSocket's bytes; a declared length would have HTTP/2 cut them off.
  const length = single(headers['content-length'])
  if (length !== undefined) {
    return { status: 400, reason: `A WebSocket CONNECT must not declare a length (Content-Length: ${JSON.stringify(length.slice(0, 40))})` }
  }
  return checkVersion(single(headers['sec-websocket-version']))
}

/** The host the client addressed: `:authority`, or a Host field when a client sent that instead (RFC 9113 §8.3.1). */
export function authorityOf (headers: Http2RequestHeaders): string | undefined {
  return single(headers[':authority']) ?? single(headers.host)
}

/** The headers of the `200` that opens the WebSocket on the stream. */
export function connectResponse (protocol: string, extensions: string): Record<string, string | number> {
  const headers: Record<string, string | number> = { ':status': 200 }
  if (protocol !== '') headers['sec-websocket-protocol'] = protocol
  if (extensions !== '') headers['sec-websocket-extensions'] = extensions
  return headers
}
