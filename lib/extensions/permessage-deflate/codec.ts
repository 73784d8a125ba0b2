/**
 * permessage-deflate (RFC 7692): the per-socket compressor and decompressor. Options and their defaults are
 * ./options.ts, the handshake is ./negotiation.ts.
 *
 * One PerMessageDeflate belongs to one socket. It owns at most one raw-deflate and one raw-inflate zlib stream.
 * When context takeover is allowed for a direction, that direction's stream lives as long as the socket, so the
 * LZ77 window carries over from message to message; when no_context_takeover was negotiated for it, the stream is
 * reset after every message (a cheap deflateReset/inflateReset: rebuilding a zlib stream per message halved
 * compressed throughput). Streams are created lazily, on the first message that needs one. Every zlib job goes
 * through the process-wide FIFO limiter of ./limiter.ts, and per socket and per direction only one job is in
 * flight, so callbacks come back in call order.
 */
import { createDeflateRaw, createInflateRaw, constants as zlibConstants } from 'node:zlib'
import type { DeflateRaw, InflateRaw } from 'node:zlib'
import { getLimiter } from './limiter.js'
import type { Limiter } from './limiter.js'
import type { NegotiatedDeflate, PerMessageDeflateOptions } from './options.js'

/** The error given to a decompress() callback: 1009 when the message would exceed maxPayload, 1007 when corrupt. */
export interface InflateError extends Error {
  closeCode: 1007 | 1009
}

const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff])

/* c8 ignore next -- only reached if a discarded stream still emits an error */
function noop (): void {}

/** One direction's zlib stream, with the output it has produced for the message in progress. */
interface ZlibStream<S extends DeflateRaw | InflateRaw> {
  readonly stream: S
  chunks: Buffer[]
  length: number
}

/** Hand over the output collected for the message (read `length` first) and start the next one empty. */
function takeChunks (z: ZlibStream<DeflateRaw | InflateRaw>): Buffer[] {
  const chunks = z.chunks
  z.chunks = []
  z.length = 0
  return chunks
}

/** Tear down a stream and its collected output; returns null, for `this.#x = discard(this.#x)`. */
function discard (z: ZlibStream<DeflateRaw | InflateRaw> | null): null {
  if (z === null) return null
  z.stream.removeAllListeners()
  z.stream.on('error', noop) // anything emitted while it is torn down is of no interest
  z.stream.close()
  return null
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

/** The message in flight in one direction: its callback, and what frees its limiter slot. */
interface Job<E extends Error> {
  cb: (err: E | null, result: Buffer | null) => void
  finish: () => void
}

/** Answer the job in flight, if any, with an error: its slot is freed first, as on success. */
function failJob<E extends Error> (job: Job<E> | null, err: E): void {
  /* c8 ignore next -- the streams only emit while a job is in flight */
  if (job === null) return
  job.finish()
  job.cb(err, null)
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

  #deflate: ZlibStream<DeflateRaw> | null = null
  #deflateJob: Job<Error> | null = null

  #inflate: ZlibStream<InflateRaw> | null = null
  /** Input bytes written to the current inflate stream; differs from its bytesWritten once it hit BFINAL. */
  #inflateInput = 0
  #inflateJob: Job<InflateError> | null = null

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
      const z = this.#deflate ?? this.#openDeflate()
      const s = z.stream
      const job: Job<Error> = { cb, finish }
      this.#deflateJob = job
      s.write(data)
      s.flush(zlibConstants.Z_SYNC_FLUSH, () => {
        if (this.#deflateJob !== job) return // closed, or failed and already answered
        /* c8 ignore start -- see decompress */
        if (s.errored !== null) {
          this.#failDeflate(s.errored)
          return
        }
        /* c8 ignore stop */
        this.#deflateJob = null
        const length = z.length
        const chunks = takeChunks(z)
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
      const z = this.#inflate ?? this.#openInflate()
      const s = z.stream
      const job: Job<InflateError> = { cb, finish }
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
        const length = z.length
        const result = Buffer.concat(takeChunks(z), length)
        // A block with BFINAL set ends the zlib stream: further input would be ignored, so start a new one
        // (RFC 7692 §7.2.3.3 allows such a block; the peer cannot then expect its window to carry over).
        if (s.bytesWritten !== this.#inflateInput) this.#inflate = discard(this.#inflate)
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
    this.#deflate = discard(this.#deflate)
    this.#inflate = discard(this.#inflate)
    this.#inflateJob = null
    this.#deflateJob = null
    for (const lane of [this.#compressLane, this.#decompressLane]) {
      lane.tasks.length = 0
      const release = lane.release
      lane.release = null
      if (release !== null) release()
    }
  }

  /** Our compressor, created on the first message to compress. */
  #openDeflate (): ZlibStream<DeflateRaw> {
    const z: ZlibStream<DeflateRaw> = {
      stream: createDeflateRaw({ level: this.#level, memLevel: this.#memLevel, windowBits: this.#deflateBits }),
      chunks: [],
      length: 0
    }
    z.stream.on('data', (chunk: Buffer) => {
      z.chunks.push(chunk)
      z.length += chunk.length
    })
    /* c8 ignore next -- zlib fails to deflate only when out of memory */
    z.stream.on('error', (err: Error) => this.#failDeflate(err))
    this.#deflate = z
    return z
  }

  /** Our decompressor, created on the first message to decompress (and again after a BFINAL block). */
  #openInflate (): ZlibStream<InflateRaw> {
    const z: ZlibStream<InflateRaw> = { stream: createInflateRaw({ windowBits: this.#inflateBits }), chunks: [], length: 0 }
    z.stream.on('data', (chunk: Buffer) => {
      const length = z.length + chunk.length
      if (length > this.#maxPayload) {
        this.#failInflate(inflateError(`Decompressed message exceeds maxPayload (${this.#maxPayload} bytes)`, 1009))
        return
      }
      z.chunks.push(chunk)
      z.length = length
    })
    z.stream.on('error', (err: Error) => {
      this.#failInflate(inflateError(`Invalid compressed data: ${err.message}`, 1007))
    })
    this.#inflate = z
    this.#inflateInput = 0
    return z
  }

  /* c8 ignore start -- zlib fails to deflate only when out of memory */
  #failDeflate (err: Error): void {
    const job = this.#deflateJob
    this.#deflateJob = null
    this.#deflate = discard(this.#deflate)
    failJob(job, err)
  }
  /* c8 ignore stop */

  #failInflate (err: InflateError): void {
    const job = this.#inflateJob
    this.#inflateJob = null
    this.#inflate = discard(this.#inflate)
    failJob(job, err)
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
