/**
 * The opening handshake (RFC 6455 §4.2): request validation and the 101 answer.
 */
import { createHash } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { WS_GUID } from '../protocol/constants.js'
import { listIncludes } from './tokens.js'

export interface Rejection {
  status: number
  reason: string
  headers?: Record<string, string>
}

/** base64 of exactly 16 bytes: 22 significant characters and "==". */
const KEY_PATTERN = /^[A-Za-z0-9+/]{22}==$/

/** Whether a comma-separated header contains `token` (given in lower case; matched case-insensitively). */
export function hasToken (value: string | undefined, token: string): boolean {
  return value !== undefined && listIncludes(value.toLowerCase(), token)
}

/** Validate a client handshake. Returns the Sec-WebSocket-Key, or why it is refused. */
export function checkHandshake (req: IncomingMessage): string | Rejection {
  if (req.method !== 'GET') {
    return { status: 405, reason: 'A WebSocket handshake must use GET', headers: { allow: 'GET' } }
  }
  if (req.httpVersionMajor < 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor < 1)) {
    return { status: 400, reason: 'A WebSocket handshake needs HTTP/1.1 or later' }
  }
  const headers = req.headers
  if (headers.host === undefined || headers.host === '') {
    return { status: 400, reason: 'Missing Host header' }
  }
  if (!hasToken(headers.upgrade, 'websocket')) {
    return { status: 400, reason: 'Upgrade header must contain "websocket"' }
  }
  if (!hasToken(headers.connection, 'upgrade')) {
    return { status: 400, reason: 'Connection header must contain "Upgrade"' }
  }
  // A body would reach the connection as its first bytes and be parsed as frames.
  const te = headers['transfer-encoding']
  if (te !== undefined) {
    return { status: 400, reason: `A WebSocket handshake must not have a body (Transfer-Encoding: ${JSON.stringify(te.slice(0, 40))})` }
  }
  const length = headers['content-length']
  if (length !== undefined && !/^0+$/.test(length)) {
    return { status: 400, reason: `A WebSocket handshake must not have a body (Content-Length: ${JSON.stringify(length.slice(0, 40))})` }
  }
  const version = checkVersion(headers['sec-websocket-version'])
  if (version !== null) return version
  const key = headers['sec-websocket-key']
  if (key === undefined) return { status: 400, reason: 'Missing Sec-WebSocket-Key header' }
  const trimmed = key.trim()
  if (!KEY_PATTERN.test(trimmed)) {
    return { status: 400, reason: 'Sec-WebSocket-Key must be exactly one base64-encoded 16-byte value' }
  }
  return trimmed
}

/**
 * Sec-WebSocket-Version must be 13 (RFC 6455 §4.2.1; RFC 8441 §5 keeps the rule for HTTP/2): null if it is, else
 * the 426 that names the version we speak. The one owner of this rule for both HTTP versions.
 */
export function checkVersion (version: string | undefined): Rejection | null {
  if (version !== undefined && version.trim() === '13') return null
  return {
    status: 426,
    reason: 'Unsupported Sec-WebSocket-Version: only 13 is supported',
    headers: { 'sec-websocket-version': '13' }
  }
}

/** Sec-WebSocket-Accept: base64(SHA-1(key + GUID)). */
export function acceptKey (key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64')
}

/** The 101 response, as one string written before any frame. */
export function switchingProtocols (key: string, protocol: string, extensions: string): string {
  let head = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' +
    acceptKey(key) + '\r\n'
  if (protocol !== '') head += 'Sec-WebSocket-Protocol: ' + protocol + '\r\n'
  if (extensions !== '') head += 'Sec-WebSocket-Extensions: ' + extensions + '\r\n'
  return head + '\r\n'
}
