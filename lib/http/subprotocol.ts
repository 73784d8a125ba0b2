/**
 * Sec-WebSocket-Protocol (RFC 6455 §4.2.2, §11.3.4): parse the client's
 * offer and pick the server's preferred protocol among them.
 */

import { elementText, isToken, listCursor, nextElement } from './tokens.js'

/** Upper bounds that keep parsing cheap on hostile input. */
const MAX_PROTOCOLS = 64
const MAX_HEADER_LENGTH = 4096

/**
 * Parse the offered protocols (repeated headers are joined by Node with ', '; empty list elements are skipped).
 * Returns the list (possibly empty), or null if the header is malformed or too large.
 * Linear in the header length: one pass of the list scanner (tokens.ts), no backtracking.
 */
export function parseProtocols (header: string | string[] | undefined): string[] | null {
  if (header === undefined) return []
  const value = Array.isArray(header) ? header.join(',') : header
  if (value.length > MAX_HEADER_LENGTH) return null
  const out: string[] = []
  const cursor = listCursor(value)
  while (nextElement(cursor)) {
    const item = elementText(cursor)
    if (!isToken(item) || out.includes(item)) return null
    if (out.length === MAX_PROTOCOLS) return null
    out.push(item)
  }
  // A header that is only commas and spaces offers nothing: 1#token needs one element.
  if (out.length === 0 && value.trim() !== '') return null
  return out
}

/** The first protocol in the server's order of preference that the client offered, or '' if none. */
export function pickProtocol (serverOrder: readonly string[], offered: readonly string[]): string {
  for (const protocol of serverOrder) {
    if (offered.includes(protocol)) return protocol
  }
  return ''
}
