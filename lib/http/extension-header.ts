/**
 * Sec-WebSocket-Extensions parsing and formatting (RFC 6455 §9.1, list and token grammar of RFC 7230 §3.2.6, §7).
 *
 *   Sec-WebSocket-Extensions = 1#extension
 *   extension       = extension-token *( OWS ";" OWS extension-param )
 *   extension-param = token [ OWS "=" OWS ( token / quoted-string ) ]
 *
 * A quoted value must be a token once unescaped (RFC 6455 §9.1). Empty list elements are ignored (RFC 7230 §7).
 * The parser is a single left-to-right scan over char codes: no regular expressions, no backtracking, and hard
 * caps on input size, offers and parameters, so a hostile header costs at most one pass over 8 KiB. The token
 * grammar (tchar) is the one of tokens.ts; the list scanner there does not fit this grammar, whose elements hold
 * parameters and quoted strings that may contain commas.
 */
import { isTchar, isToken } from './tokens.js'

/** Parameter name -> value; `true` when the parameter was present without a value. */
export type ExtensionParams = Map<string, string | true>

export interface ExtensionOffer {
  name: string
  /** Parameters in header order. When a name repeats, the first value is kept and `duplicateParams` is set. */
  params: ExtensionParams
  /** Set when a parameter name occurred more than once in this element (RFC 7692 says: decline such an offer). */
  duplicateParams?: boolean
}

/** Refuse headers longer than this (all repeated header lines together, in UTF-16 code units). */
export const MAX_EXTENSIONS_HEADER_LENGTH = 8 * 1024
/** Refuse headers with more extension elements than this. */
export const MAX_EXTENSION_OFFERS = 64
/** Refuse headers with more parameters than this, counted over all elements. */
export const MAX_EXTENSION_PARAMS = 128

const SP = 0x20
const HTAB = 0x09
const COMMA = 0x2c
const SEMICOLON = 0x3b
const EQUALS = 0x3d
const DQUOTE = 0x22
const BACKSLASH = 0x5c

/**
 * Parse a Sec-WebSocket-Extensions header (a string, or the values of repeated header lines, which are joined as
 * one comma-separated list). Returns the extension elements in order, `[]` when the header is absent or has only
 * empty elements, or `null` when it is malformed or exceeds the size limits (the caller answers 400).
 */
export function parseExtensions (header: string | string[] | undefined): ExtensionOffer[] | null {
  if (header === undefined) return []
  let s: string
  if (typeof header === 'string') {
    s = header
  } else {
    if (!Array.isArray(header)) return null
    let total = 0
    for (const h of header) {
      if (typeof h !== 'string') return null
      total += h.length + 1
      // Check before joining so a huge array is not concatenated just to be refused.
      if (total > MAX_EXTENSIONS_HEADER_LENGTH + 1) return null
    }
    s = header.join(',')
  }
  if (s.length > MAX_EXTENSIONS_HEADER_LENGTH) return null

  const n = s.length
  const offers: ExtensionOffer[] = []
  let paramCount = 0
  let i = 0

  const skipOws = (): void => {
    while (i < n) {
      const c = s.charCodeAt(i)
      if (c !== SP && c !== HTAB) break
      i++
    }
  }
  const readToken = (): string => {
    const start = i
    while (i < n && isTchar(s.charCodeAt(i))) i++
    return s.slice(start, i)
  }
  // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE; returns the unescaped content, or null if malformed.
  const readQuoted = (): string | null => {
    i++ // opening quote
    let out = ''
    let chunkStart = i
    while (i < n) {
      const c = s.charCodeAt(i)
      if (c === DQUOTE) {
        out += s.slice(chunkStart, i)
        i++
        return out
      }
      if (c === BACKSLASH) {
        out += s.slice(chunkStart, i)
        if (i + 1 >= n) return null
        const e = s.charCodeAt(i + 1)
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        if (!(e === HTAB || (e >= 0x20 && e <= 0x7e) || (e >= 0x80 && e <= 0xff))) return null
        out += s[i + 1]
        i += 2
        chunkStart = i
        continue
      }
      // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
      if (!(c === HTAB || (c >= 0x20 && c <= 0x7e) || (c >= 0x80 && c <= 0xff))) return null
      i++
    }
    return null // unterminated
  }

  while (true) {
    skipOws()
    if (i >= n) break
    if (s.charCodeAt(i) === COMMA) { // empty list element
      i++
      continue
    }
    const name = readToken()
    if (name.length === 0) return null
    const offer: ExtensionOffer = { name, params: new Map() }
    skipOws()
    while (i < n && s.charCodeAt(i) === SEMICOLON) {
      i++
      skipOws()
      const key = readToken()
      if (key.length === 0) return null
      skipOws()
      let value: string | true = true
      if (i < n && s.charCodeAt(i) === EQUALS) {
        i++
        skipOws()
        if (i < n && s.charCodeAt(i) === DQUOTE) {
          const q = readQuoted()
          // RFC 6455 §9.1: after unescaping, a quoted value must still be a token.
          if (q === null || !isToken(q)) return null
          value = q
        } else {
          value = readToken()
          if (value.length === 0) return null
        }
        skipOws()
      }
      if (++paramCount > MAX_EXTENSION_PARAMS) return null
      if (offer.params.has(key)) offer.duplicateParams = true
      else offer.params.set(key, value)
    }
    if (i < n) {
      if (s.charCodeAt(i) !== COMMA) return null
      i++
    }
    if (offers.push(offer) > MAX_EXTENSION_OFFERS) return null
  }
  return offers
}

/**
 * Format one extension for a Sec-WebSocket-Extensions header, e.g.
 * `permessage-deflate; server_no_context_takeover; client_max_window_bits=10`.
 * Throws a TypeError if the name, a parameter name or a value is not a token (RFC 6455 §9.1 allows no other).
 */
export function formatExtension (name: string, params: ExtensionParams): string {
  if (!isToken(name)) throw new TypeError(`Invalid extension name: ${JSON.stringify(name)}`)
  let out = name
  for (const [key, value] of params) {
    if (!isToken(key)) throw new TypeError(`Invalid extension parameter name: ${JSON.stringify(key)}`)
    if (value === true) {
      out += `; ${key}`
    } else {
      if (typeof value !== 'string' || !isToken(value)) {
        throw new TypeError(`Invalid value for extension parameter ${key}: ${JSON.stringify(value)}`)
      }
      out += `; ${key}=${value}`
    }
  }
  return out
}
