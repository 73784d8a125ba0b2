/**
 * permessage-deflate (RFC 7692): what a user may configure, its defaults, and what a handshake agrees on.
 * Validation of user input lives with every other option, in lib/plugin/options.ts.
 */

export interface PerMessageDeflateOptions {
  /** Messages shorter than this many bytes are sent uncompressed. Default 1024. */
  threshold?: number
  /** Ask to reset our compressor after every message we send. Default false. */
  serverNoContextTakeover?: boolean
  /** Ask the client to reset its compressor after every message it sends. Default false. */
  clientNoContextTakeover?: boolean
  /** Largest LZ77 window (log2) the server compresses with, 8..15. Default 15. */
  serverMaxWindowBits?: number
  /** Largest LZ77 window (log2) the client may compress with, 8..15. Default 15. */
  clientMaxWindowBits?: number
  /** zlib compression level, 0..9 (or -1, zlib's default, which is 6). Default 1. */
  level?: number
  /** zlib memLevel, 1..9. Default 8. */
  memLevel?: number
  /** Most zlib jobs in flight process-wide; the rest wait in a FIFO queue. Default 10. */
  concurrency?: number
}

/** The parameters both ends agreed on in the handshake (RFC 7692 §7.1). */
export interface NegotiatedDeflate {
  serverNoContextTakeover: boolean
  clientNoContextTakeover: boolean
  serverMaxWindowBits: number
  clientMaxWindowBits: number
}

export const DEFAULT_DEFLATE_OPTIONS: Readonly<Required<PerMessageDeflateOptions>> = Object.freeze({
  threshold: 1024,
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
  level: 1,
  memLevel: 8,
  concurrency: 10
})
