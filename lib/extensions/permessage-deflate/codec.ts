/**
 * permessage-deflate (RFC 7692): option validation, negotiation (server and client side) and the per-socket
 * compressor/decompressor.
 *
 * One PerMessageDeflate belongs to one socket. It owns at most one raw-deflate and one raw-inflate zlib stream.
 * When context takeover is allowed for a direction, that direction's stream lives as long as the socket, so the
 * LZ77 window carries over from message to message; when no_context_takeover was negotiated for it, the stream is
 * reset after every message (a cheap deflateReset/inflateReset: rebuilding a zlib stream per message halved
 * compressed throughput). Streams are created lazily, on the first message that needs one. Every zlib job goes through the process-wide FIFO limiter of lib/deflate-queue.ts, and per socket
 * and per direction only one job is in flight, so callbacks come back in call order.
 */
import { createDeflateRaw, createInflateRaw, constants as zlibConstants } from 'node:zlib'
import type { DeflateRaw, InflateRaw } from 'node:zlib'
import { formatExtension } from '../../http/extension-header.js'
import type { ExtensionOffer, ExtensionParams } from '../../http/extension-header.js'
import { getLimiter } from './limiter.js'
import type { Limiter } from './limiter.js'
import { FST_WS_INVALID_OPTION } from '../../errors.js'
import { describe } from '../../plugin/options.js'

export const EXTENSION_NAME = 'permessage-deflate'

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

export interface NegotiatedDeflate {
  serverNoContextTakeover: boolean
  clientNoContextTakeover: boolean
  serverMaxWindowBits: number
  clientMaxWindowBits: number
}

/** The error given to a decompress() callback: 1009 when the message would exceed maxPayload, 1007 when corrupt. */
export interface InflateError extends Error {
  closeCode: 1007 | 1009
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

const OPTION_KEYS = new Set(Object.keys(DEFAULT_DEFLATE_OPTIONS))

function intInRange (value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new FST_WS_INVALID_OPTION(name, `expected an integer from ${min} to ${max}, got ${describe(value)}`)
  }
  return value
}

/**
 * Validate permessage-deflate options and fill in the defaults. `true` and `undefined` mean "all defaults".
 * Throws FST_WS_INVALID_OPTION (a TypeError) naming the offending option, e.g. `perMessageDeflate.level`.
 */
export function validateDeflateOptions (opts: unknown, optionName: string): Required<PerMessageDeflateOptions> {
  const out: Required<PerMessageDeflateOptions> = { ...DEFAULT_DEFLATE_OPTIONS }
  if (opts === undefined || opts === true) return out
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
    throw new FST_WS_INVALID_OPTION(optionName, `expected true or an options object, got ${describe(opts)}`)
  }
  const o = opts as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!OPTION_KEYS.has(key)) {
      throw new FST_WS_INVALID_OPTION(`${optionName}.${key}`,
        `unknown option (known: ${[...OPTION_KEYS].join(', ')})`)
    }
  }
  const name = (key: string): string => `${optionName}.${key}`
  if (o.threshold !== undefined) {
    const v = o.threshold
    if (v !== Infinity && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) {
      throw new FST_WS_INVALID_OPTION(name('threshold'), `expected a non-negative integer or Infinity, got ${describe(v)}`)
    }
    out.threshold = v as number
  }
  for (const key of ['serverNoContextTakeover', 'clientNoContextTakeover'] as const) {
    const v = o[key]
    if (v === undefined) continue
    if (typeof v !== 'boolean') throw new FST_WS_INVALID_OPTION(name(key), `expected a boolean, got ${describe(v)}`)
    out[key] = v
  }
  if (o.serverMaxWindowBits !== undefined) out.serverMaxWindowBits = intInRange(o.serverMaxWindowBits, name('serverMaxWindowBits'), 8, 15)
  if (o.clientMaxWindowBits !== undefined) out.clientMaxWindowBits = intInRange(o.clientMaxWindowBits, name('clientMaxWindowBits'), 8, 15)
  if (o.level !== undefined) out.level = intInRange(o.level, name('level'), -1, 9)
  if (o.memLevel !== undefined) out.memLevel = intInRange(o.memLevel, name('memLevel'), 1, 9)
  if (o.concurrency !== undefined) out.concurrency = intInRange(o.concurrency, name('concurrency'), 1, 1024)
  return out
}

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

const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff])

/* c8 ignore next -- only reached if a discarded stream still emits an error */
function noop (): void {}

function discardStream (stream: DeflateRaw | InflateRaw): void {
  stream.removeAllListeners()
  stream.on('error', noop) // anything emitted while it is torn down is of no interest
  stream.close()
}

function inflateError (message: string, closeCode: 1007 | 1009): InflateError {
  return Object.assign(new Error(message), { closeCode })
}

type Task = (finish: () => void) => void

/** One direction's serial queue: at most one of its jobs is in the limiter at a time. */
interface Lane {
  tasks: Task[]
  busy: boolean
  /** Frees the limiter slot of the job in flight (set while one is). */
  release: (() => void) | null
}

interface InflateJob {
  cb: (err: InflateError | null, result: Buffer | null) => void
  finish: () => void
}

interface DeflateJob {
  cb: (err: Error | null, result: Buffer | null) => void
  finish: () => void
}

export class PerMessageDeflate {
  /** Messages shorter than this are to be sent uncompressed (the sender decides). */
  readonly threshold: number
  readonly params: NegotiatedDeflate
  readonly role: 'server' | 'client'

  readonly #level: number
  readonly #memLevel: number
  readonly #maxPayload: number
  readonly #limiter: Limiter
  // our compressor (the window bits and takeover of our side) and our decompressor (the peer's)
  readonly #deflateBits: number
  readonly #deflateNoContextTakeover: boolean
  readonly #inflateBits: number
  readonly #inflateNoContextTakeover: boolean

  #deflate: DeflateRaw | null = null
  #deflateChunks: Buffer[] = []
  #deflateLength = 0
  #deflateJob: DeflateJob | null = null

  #inflate: InflateRaw | null = null
  #inflateChunks: Buffer[] = []
  #inflateLength = 0
  /** Input bytes written to the current inflate stream; differs from its bytesWritten once it hit BFINAL. */
  #inflateInput = 0
  #inflateJob: InflateJob | null = null

  readonly #compressLane: Lane = { tasks: [], busy: false, release: null }
  readonly #decompressLane: Lane = { tasks: [], busy: false, release: null }
  #closed = false

  /**
   * @param maxPayload the largest decompressed message accepted (bytes; Infinity for no limit).
   */
  constructor (params: NegotiatedDeflate, role: 'server' | 'client', opts: Required<PerMessageDeflateOptions>, maxPayload: number) {
    this.params = params
    this.role = role
    this.threshold = opts.threshold
    this.#level = opts.level
    this.#memLevel = opts.memLevel
    this.#maxPayload = maxPayload
    this.#limiter = getLimiter(opts.concurrency)
    const server = role === 'server'
    // zlib refuses a window of 8 for raw deflate. A zlib compressor with window 9 never emits a distance over
    // 2^9 - 262 = 250 bytes (its MAX_DIST), so its output always fits a peer's 256-byte window: using 9 when 8
    // was negotiated stays within the agreement.
    this.#deflateBits = Math.max(9, server ? params.serverMaxWindowBits : params.clientMaxWindowBits)
    this.#deflateNoContextTakeover = server ? params.serverNoContextTakeover : params.clientNoContextTakeover
    this.#inflateBits = server ? params.clientMaxWindowBits : params.serverMaxWindowBits
    this.#inflateNoContextTakeover = server ? params.clientNoContextTakeover : params.serverNoContextTakeover
  }

  /**
   * Compress one whole message. The result is the message payload to send with RSV1 set on its first frame
   * (the trailing 00 00 ff ff of the sync flush removed). Callbacks are called in call order, never
   * synchronously. The result is a view of zlib's output that nothing else references (it may be masked in place).
   */
  compress (data: Buffer, cb: (err: Error | null, result: Buffer | null) => void): void {
    this.#enqueue(this.#compressLane, (finish) => {
      let stream = this.#deflate
      if (stream === null) {
        stream = createDeflateRaw({ level: this.#level, memLevel: this.#memLevel, windowBits: this.#deflateBits })
        stream.on('data', (chunk: Buffer) => {
          this.#deflateChunks.push(chunk)
          this.#deflateLength += chunk.length
        })
        /* c8 ignore start -- zlib fails to deflate only when out of memory */
        stream.on('error', (err: Error) => {
          const job = this.#deflateJob
          this.#deflateJob = null
          this.#dropDeflate()
          if (job === null) return
          job.finish()
          job.cb(err, null)
        })
        /* c8 ignore stop */
        this.#deflate = stream
      }
      const s = stream
      const job: DeflateJob = { cb, finish }
      this.#deflateJob = job
      s.write(data)
      s.flush(zlibConstants.Z_SYNC_FLUSH, () => {
        if (this.#deflateJob !== job) return // closed, or failed and already answered
        /* c8 ignore start -- see decompress */
        if (s.errored !== null) {
          this.#deflateJob = null
          this.#dropDeflate()
          finish()
          cb(s.errored, null)
          return
        }
        /* c8 ignore stop */
        this.#deflateJob = null
        const chunks = this.#deflateChunks
        const length = this.#deflateLength
        this.#deflateChunks = []
        this.#deflateLength = 0
        const joined = chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks, length)
        // A sync flush always ends with the empty stored block 00 00 ff ff (RFC 7692 §7.2.1).
        const result = joined.subarray(0, length - 4)
        // Without context takeover, reset the window rather than rebuild the stream: re-creating a zlib
        // stream per message costs more than the compression itself.
        if (this.#deflateNoContextTakeover) s.reset()
        finish()
        cb(null, result)
      })
    })
  }

  /**
   * Decompress one whole message payload (the payloads of all its frames, joined). Fails with closeCode 1009 as
   * soon as the output would exceed maxPayload (the output is never buffered past it) and with 1007 when the data
   * is not valid DEFLATE. Callbacks are called in call order, never synchronously. After an error the socket must
   * be failed: the decompression context is lost. The result is a fresh Buffer the caller may keep.
   */
  decompress (data: Buffer, cb: (err: InflateError | null, result: Buffer | null) => void): void {
    this.#enqueue(this.#decompressLane, (finish) => {
      if (data.length === 0) {
        // A compressor's sync flush always yields at least one byte (an empty message is 0x00, RFC 7692
        // §7.2.3.6). Inflating the trailer alone would leave zlib inside a stored block header and corrupt the
        // context for the next message, so an empty payload is an empty message and leaves the context as is.
        // Answered on the next tick: callbacks are never called synchronously from decompress().
        process.nextTick(() => {
          if (this.#closed) return // close() already freed the slot
          finish()
          cb(null, Buffer.alloc(0))
        })
        return
      }
      let stream = this.#inflate
      if (stream === null) {
        stream = createInflateRaw({ windowBits: this.#inflateBits })
        const s = stream
        s.on('data', (chunk: Buffer) => {
          const length = this.#inflateLength + chunk.length
          if (length > this.#maxPayload) {
            this.#failInflate(inflateError(`Decompressed message exceeds maxPayload (${this.#maxPayload} bytes)`, 1009))
            return
          }
          this.#inflateChunks.push(chunk)
          this.#inflateLength = length
        })
        s.on('error', (err: Error) => {
          this.#failInflate(inflateError(`Invalid compressed data: ${err.message}`, 1007))
        })
        this.#inflate = stream
        this.#inflateInput = 0
      }
      const s = stream
      const job: InflateJob = { cb, finish }
      this.#inflateJob = job
      this.#inflateInput += data.length + TRAILER.length
      s.write(data)
      s.write(TRAILER)
      s.flush(zlibConstants.Z_SYNC_FLUSH, () => {
        if (this.#inflateJob !== job) return // closed, or failed and already answered
        /* c8 ignore start -- Node emits 'error' before failing buffered writes; this guards other orders */
        if (s.errored !== null) {
          this.#failInflate(inflateError(`Invalid compressed data: ${s.errored.message}`, 1007))
          return
        }
        /* c8 ignore stop */
        this.#inflateJob = null
        const result = Buffer.concat(this.#inflateChunks, this.#inflateLength)
        this.#inflateChunks = []
        this.#inflateLength = 0
        // A block with BFINAL set ends the zlib stream: further input would be ignored, so start a new one
        // (RFC 7692 §7.2.3.3 allows such a block; the peer cannot then expect its window to carry over).
        if (s.bytesWritten !== this.#inflateInput) this.#dropInflate()
        else if (this.#inflateNoContextTakeover) s.reset()
        finish()
        cb(null, result)
      })
    })
  }

  /** Release the zlib streams. Pending and later callbacks are dropped. Idempotent. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    this.#dropDeflate()
    this.#dropInflate()
    this.#inflateJob = null
    this.#deflateJob = null
    for (const lane of [this.#compressLane, this.#decompressLane]) {
      lane.tasks.length = 0
      const release = lane.release
      lane.release = null
      if (release !== null) release()
    }
  }

  #failInflate (err: InflateError): void {
    const job = this.#inflateJob
    this.#inflateJob = null
    this.#dropInflate()
    /* c8 ignore next -- the streams only emit while a job is in flight */
    if (job === null) return
    job.finish()
    job.cb(err, null)
  }

  #dropDeflate (): void {
    const s = this.#deflate
    this.#deflateChunks = []
    this.#deflateLength = 0
    if (s === null) return
    this.#deflate = null
    discardStream(s)
  }

  #dropInflate (): void {
    const s = this.#inflate
    this.#inflateChunks = []
    this.#inflateLength = 0
    if (s === null) return
    this.#inflate = null
    discardStream(s)
  }

  #enqueue (lane: Lane, task: Task): void {
    if (this.#closed) return
    lane.tasks.push(task)
    if (!lane.busy) this.#next(lane)
  }

  #next (lane: Lane): void {
    const task = lane.tasks.shift()
    if (task === undefined) {
      lane.busy = false
      return
    }
    lane.busy = true
    this.#limiter.add((done) => {
      if (this.#closed) {
        done()
        return
      }
      // Each job answers exactly once (the stream callbacks check that their job is still the current one), so
      // finish() runs at most once; close() only frees the slot (done() is idempotent).
      lane.release = done
      task(() => {
        lane.release = null
        done()
        if (!this.#closed) this.#next(lane)
      })
    })
  }
}
