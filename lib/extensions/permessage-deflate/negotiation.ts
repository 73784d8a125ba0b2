/**
 * permessage-deflate negotiation (RFC 7692 §7.1): the server picks an offer and writes its response; the client
 * writes its offer and checks the server's response. Both sides read the element parameters the same way
 * (parseParams). Header syntax is lib/http/extension-header.ts; this module only gives the parameters meaning.
 */
import { formatExtension } from '../../http/extension-header.js'
import type { ExtensionOffer, ExtensionParams } from '../../http/extension-header.js'
import type { NegotiatedDeflate, PerMessageDeflateOptions } from './options.js'

export const EXTENSION_NAME = 'permessage-deflate'

// RFC 7692 §7.1.2: a window-bits value is a decimal integer 8..15 without leading zeroes.
function parseWindowBits (value: string): number | null {
  if (value.length === 1) return value === '8' || value === '9' ? value.charCodeAt(0) - 0x30 : null
  if (value.length === 2 && value.charCodeAt(0) === 0x31) {
    const d = value.charCodeAt(1) - 0x30
    return d >= 0 && d <= 5 ? 10 + d : null
  }
  return null
}

interface ParsedParams {
  serverNoContextTakeover: boolean
  clientNoContextTakeover: boolean
  /** undefined: absent */
  serverMaxWindowBits: number | undefined
  /** undefined: absent; true: present without a value */
  clientMaxWindowBits: number | true | undefined
}

/** Check one permessage-deflate element's parameters (RFC 7692 §7.1); null if any is unknown, repeated or invalid. */
function parseParams (offer: ExtensionOffer): ParsedParams | null {
  if (offer.duplicateParams === true) return null
  const p: ParsedParams = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: undefined,
    clientMaxWindowBits: undefined
  }
  for (const [key, value] of offer.params) {
    switch (key) {
      case 'server_no_context_takeover':
        if (value !== true) return null
        p.serverNoContextTakeover = true
        break
      case 'client_no_context_takeover':
        if (value !== true) return null
        p.clientNoContextTakeover = true
        break
      case 'server_max_window_bits': {
        if (value === true) return null
        const bits = parseWindowBits(value)
        if (bits === null) return null
        p.serverMaxWindowBits = bits
        break
      }
      case 'client_max_window_bits': {
        if (value === true) {
          p.clientMaxWindowBits = true
        } else {
          const bits = parseWindowBits(value)
          if (bits === null) return null
          p.clientMaxWindowBits = bits
        }
        break
      }
      default:
        return null
    }
  }
  return p
}

/**
 * Server side (RFC 7692 §7.1): accept the first acceptable permessage-deflate offer. Offers of other extensions
 * are skipped; a permessage-deflate offer is declined if a parameter is unknown, repeated or has an invalid value,
 * or if we must limit the client's window (clientMaxWindowBits < 15) and the offer lacks client_max_window_bits.
 * Returns null when nothing is acceptable (the handshake goes on without compression).
 */
export function negotiateServer (
  offers: ExtensionOffer[],
  opts: Required<PerMessageDeflateOptions>
): { params: NegotiatedDeflate, response: string } | null {
  for (const offer of offers) {
    if (offer.name !== EXTENSION_NAME) continue
    const p = parseParams(offer)
    if (p === null) continue
    // A client that did not offer client_max_window_bits cannot be told to use a smaller window.
    if (p.clientMaxWindowBits === undefined && opts.clientMaxWindowBits < 15) continue

    const params: NegotiatedDeflate = {
      serverNoContextTakeover: opts.serverNoContextTakeover || p.serverNoContextTakeover,
      clientNoContextTakeover: opts.clientNoContextTakeover || p.clientNoContextTakeover,
      // Any requested server window from 8 up can be honoured (see PerMessageDeflate on window 8).
      serverMaxWindowBits: Math.min(opts.serverMaxWindowBits, p.serverMaxWindowBits ?? 15),
      clientMaxWindowBits: Math.min(opts.clientMaxWindowBits,
        typeof p.clientMaxWindowBits === 'number' ? p.clientMaxWindowBits : 15)
    }
    const response: ExtensionParams = new Map()
    if (params.serverNoContextTakeover) response.set('server_no_context_takeover', true)
    if (params.clientNoContextTakeover) response.set('client_no_context_takeover', true)
    // §7.1.2.1: echo server_max_window_bits when offered (same or smaller value); may add it when not offered.
    if (p.serverMaxWindowBits !== undefined || params.serverMaxWindowBits < 15) {
      response.set('server_max_window_bits', String(params.serverMaxWindowBits))
    }
    // §7.1.2.2: only when offered. Sent whenever it limits the client or the client named a value of its own,
    // so the window the client must use is never left implicit.
    if (p.clientMaxWindowBits !== undefined &&
        (params.clientMaxWindowBits < 15 || typeof p.clientMaxWindowBits === 'number')) {
      response.set('client_max_window_bits', String(params.clientMaxWindowBits))
    }
    return { params, response: formatExtension(EXTENSION_NAME, response) }
  }
  return null
}

/** Client side: the Sec-WebSocket-Extensions offer for these options (a single permessage-deflate element). */
export function clientOffer (opts: Required<PerMessageDeflateOptions>): string {
  const params: ExtensionParams = new Map()
  if (opts.serverNoContextTakeover) params.set('server_no_context_takeover', true)
  if (opts.clientNoContextTakeover) params.set('client_no_context_takeover', true)
  if (opts.serverMaxWindowBits < 15) params.set('server_max_window_bits', String(opts.serverMaxWindowBits))
  params.set('client_max_window_bits', opts.clientMaxWindowBits < 15 ? String(opts.clientMaxWindowBits) : true)
  return formatExtension(EXTENSION_NAME, params)
}

/**
 * Client side: validate the server's Sec-WebSocket-Extensions response to clientOffer(opts). Call it only when the
 * response header is present. Returns the negotiated parameters, or null when the response is not acceptable and
 * the client must fail the connection (RFC 6455 §4.1, RFC 7692 §5): any element other than exactly one
 * permessage-deflate, unknown/repeated/invalid parameters, client_max_window_bits without a value, or a
 * server_max_window_bits larger than the one we asked for.
 */
export function acceptClientResponse (
  offers: ExtensionOffer[],
  opts: Required<PerMessageDeflateOptions>
): NegotiatedDeflate | null {
  if (offers.length !== 1) return null
  const offer = offers[0] as ExtensionOffer
  if (offer.name !== EXTENSION_NAME) return null
  const p = parseParams(offer)
  if (p === null) return null
  if (p.clientMaxWindowBits === true) return null
  if (p.serverMaxWindowBits !== undefined && p.serverMaxWindowBits > opts.serverMaxWindowBits) return null
  return {
    serverNoContextTakeover: p.serverNoContextTakeover,
    clientNoContextTakeover: p.clientNoContextTakeover || opts.clientNoContextTakeover,
    // Without the parameter the server may use any window: inflate with the largest.
    serverMaxWindowBits: p.serverMaxWindowBits ?? 15,
    clientMaxWindowBits: Math.min(p.clientMaxWindowBits ?? 15, opts.clientMaxWindowBits)
  }
}
