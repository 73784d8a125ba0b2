/**
 * Incremental RFC 6455 frame parser (§5.2): a state machine fed with chunks
 * split at arbitrary byte boundaries. It validates every frame, reassembles
 * fragmented messages into one growing buffer (an empty fragment costs
 * nothing, and memory is bounded by maxPayload in bytes, not by a count of
 * pieces), validates UTF-8 as early as possible, and reports to its host.
 */
import {
  OPCODE_BINARY, OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT, EMPTY_BUFFER
} from './constants.js'
import { applyMask } from './mask.js'
import { Utf8Stream } from './utf8.js'
import { isUtf8 } from 'node:buffer'
import { isValidReceivedCloseCode } from './close-codes.js'
import type { PerMessageDeflate, InflateError } from '../extensions/permessage-deflate/codec.js'
import { FST_WS_PROTOCOL_ERROR, FST_WS_INVALID_UTF8, FST_WS_MESSAGE_TOO_BIG, FST_WS_DEFLATE_ERROR } from '../errors.js'
import { closingError, type ClosingError } from './closing-error.js'

export interface ReceiverHost {
  onMessage (data: Buffer, isBinary: boolean): void
  onPing (data: Buffer): void
  onPong (data: Buffer): void
  /** The peer's Close frame: code 1005 when it carried no status. */
  onCloseFrame (code: number, reason: string): void
  /** The peer broke the protocol: fail the connection with `err.closeCode`. */
  onProtocolError (err: ClosingError): void
  /**
   * Input waits while a message inflates: `bytes` is how much is waiting, reported as it grows and after each
   * inflated message; 0 once the receiver has caught up (nothing inflating, nothing waiting), so the host can
   * bound it and finish what it deferred.
   */
  onBacklog (bytes: number): void
}

/**
 * The most reserved up front for a frame that spans reads (one socket read's worth); a larger frame grows as its
 * bytes arrive. A frame up to this size is allocated whole at once: growing it would copy it again (64 KiB echo
 * lost 14% of its throughput to that with a 16 KiB start).
 */
const FIRST_PAYLOAD_ALLOCATION = 64 * 1024

const HEADER = 0
const PAYLOAD = 1
const STOPPED = 2

/**
 * Scratch space for the current frame's mask. Parsing is synchronous, so one module-level buffer serves
 * every connection; a frame left incomplete keeps its mask as a number until its next piece arrives.
 */
const MASK = Buffer.alloc(4)

export interface ReceiverOptions {
  /** Server role: client frames must be masked. Client role: server frames must not be. */
  isServer: boolean
  maxPayload: number
  /** The socket's permessage-deflate state, when negotiated. */
  deflate?: PerMessageDeflate | null
}
const ROTATED = Buffer.alloc(4)

/** MASK as seen from payload offset `k` of the frame (k = offset & 3). */
function rotatedMask (k: number): Buffer {
  if (k === 0) return MASK
  for (let i = 0; i < 4; i++) ROTATED[i] = MASK[(i + k) & 3]!
  return ROTATED
}

export class Receiver {
  private readonly host: ReceiverHost
  /** Server role: client frames must be masked. Client role: server frames must not be. */
  private readonly isServer: boolean
  private readonly maxPayload: number
  private readonly deflate: PerMessageDeflate | null

  private state = HEADER
  private leftover: Buffer | null = null
  // current frame
  private fin = false
  private rsv1 = false
  private opcode = 0
  private masked = false
  private payloadLength = 0
  /** The mask of a frame whose payload spans chunks (big-endian), restored into MASK per piece. */
  private maskKey = 0
  /** The current frame is text whose UTF-8 is checked as its pieces arrive. */
  private streamText = false
  private partial: Buffer | null = null
  private partialFilled = 0
  // current fragmented message
  private messageOpcode = 0
  private messageCompressed = false
  private messageBuffer: Buffer | null = null
  private messageLength = 0
  /** Created on the first fragmented or chunk-spanning text message. */
  private utf8Stream: Utf8Stream | null = null
  // permessage-deflate: input waits, in arrival order, while a message inflates
  private inflating = false
  private queued: Array<Buffer | undefined> = []
  /** Index of the first waiting chunk: taking one is O(1), so catching up is linear in the input. */
  private queuedHead = 0
  private queuedBytes = 0
  private readonly onInflated: ((err: InflateError | null, data: Buffer | null) => void) | null

  constructor (host: ReceiverHost, options: ReceiverOptions) {
    this.host = host
    this.isServer = options.isServer
    this.maxPayload = options.maxPayload
    this.deflate = options.deflate ?? null
    this.onInflated = this.deflate === null ? null : this.inflated.bind(this)
  }

  private get utf8 (): Utf8Stream {
    return this.utf8Stream ?? (this.utf8Stream = new Utf8Stream())
  }

  /** Stop parsing for good (the connection is closing or failed). */
  stop (): void {
    this.state = STOPPED
    this.leftover = null
    this.partial = null
    this.messageBuffer = null
    this.queued = []
    this.queuedHead = 0
    this.queuedBytes = 0
  }

  /** A message is inflating or input waits behind one. */
  get busy (): boolean {
    return this.inflating
  }

  get stopped (): boolean {
    return this.state === STOPPED
  }

  push (chunk: Buffer): void {
    if (this.state === STOPPED) return
    if (this.inflating) {
      this.queued.push(chunk)
      this.queuedBytes += chunk.length
      this.host.onBacklog(this.queuedBytes)
      return
    }
    this.feed(chunk)
  }

  private feed (chunk: Buffer): void {
    if (this.leftover !== null) {
      chunk = Buffer.concat([this.leftover, chunk])
      this.leftover = null
    }
    this.parse(chunk)
  }

  private parse (chunk: Buffer): void {
    const len = chunk.length
    let off = 0
    while (true) {
      if (this.state === PAYLOAD) {
        // A frame spread over several chunks: unmask (and check text) piece by piece, so invalid
        // UTF-8 fails on the piece that carries it, not when the frame completes.
        let partial = this.partial!
        const start = this.partialFilled
        const take = Math.min(this.payloadLength - start, len - off)
        if (start + take > partial.length) partial = this.growPartial(start + take)
        chunk.copy(partial, start, off, off + take)
        off += take
        this.partialFilled = start + take
        if (this.masked) {
          MASK.writeUInt32BE(this.maskKey, 0)
          applyMask(partial, rotatedMask(start & 3), start, start + take)
        }
        if (this.streamText && !this.utf8.write(partial, start, start + take)) {
          return this.fail(closingError(new FST_WS_INVALID_UTF8('text message'), 1007))
        }
        if (this.partialFilled < this.payloadLength) return
        this.partial = null
        this.state = HEADER
        // Complete: every allocation is capped at the announced length, so `partial` is exactly the payload.
        if (!this.frame(partial)) return this.park(chunk, off)
        continue
      }
      if (this.state !== HEADER) return
      const avail = len - off
      if (avail < 2) {
        if (avail > 0) this.leftover = chunk.subarray(off)
        return
      }
      const b0 = chunk[off]!
      const b1 = chunk[off + 1]!
      const lengthCode = b1 & 0x7f
      const masked = (b1 & 0x80) !== 0
      const headerLength = 2 + (lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0) + (masked ? 4 : 0)
      if (avail < headerLength) {
        // Validate what the first two bytes already tell, so a bad frame fails before its header completes.
        if (!this.checkHeader(b0, masked, lengthCode)) return
        this.leftover = chunk.subarray(off)
        return
      }
      if (!this.checkHeader(b0, masked, lengthCode)) return
      let payloadLength = lengthCode
      let p = off + 2
      if (lengthCode === 126) {
        payloadLength = chunk.readUInt16BE(p)
        p += 2
      } else if (lengthCode === 127) {
        const high = chunk.readUInt32BE(p)
        if (high > 0x7fffffff) {
          return this.fail(closingError(new FST_WS_PROTOCOL_ERROR('payload length has the most significant bit set'), 1002))
        }
        payloadLength = high * 0x100000000 + chunk.readUInt32BE(p + 4)
        p += 8
      }
      if (this.opcode < 8) {
        if (payloadLength > this.maxPayload || this.messageLength + payloadLength > this.maxPayload) {
          return this.fail(closingError(new FST_WS_MESSAGE_TOO_BIG(`message exceeds maxPayload (${this.maxPayload} bytes)`), 1009))
        }
      }
      if (masked) {
        MASK[0] = chunk[p]!
        MASK[1] = chunk[p + 1]!
        MASK[2] = chunk[p + 2]!
        MASK[3] = chunk[p + 3]!
        p += 4
      }
      off = p
      this.payloadLength = payloadLength
      if (len - off >= payloadLength) {
        const payload = payloadLength === 0 ? EMPTY_BUFFER : chunk.subarray(off, off + payloadLength)
        off += payloadLength
        if (masked && payloadLength > 0) applyMask(chunk, MASK, off - payloadLength, off)
        if (!this.frame(payload)) return this.park(chunk, off)
        continue
      }
      // Reserve memory for the bytes that arrive, not for the length the header announces: a peer that announces
      // maxPayload and then trickles (or stops) costs what it sent, grown geometrically as more comes.
      this.partial = Buffer.allocUnsafe(Math.min(payloadLength, Math.max(FIRST_PAYLOAD_ALLOCATION, len - off)))
      this.partialFilled = 0
      this.state = PAYLOAD
      if (masked) this.maskKey = MASK.readUInt32BE(0)
      const opcode = this.opcode
      this.streamText = opcode === OPCODE_TEXT
        ? !this.rsv1
        : opcode === OPCODE_CONTINUATION && this.messageOpcode === OPCODE_TEXT && !this.messageCompressed
      if (opcode === OPCODE_TEXT) this.utf8.reset()
    }
  }

  /** Double the spanning frame's buffer (at most to its announced length), keeping what it holds. */
  private growPartial (needed: number): Buffer {
    const old = this.partial!
    const grown = Buffer.allocUnsafe(Math.min(this.payloadLength, Math.max(needed, old.length * 2)))
    old.copy(grown, 0, 0, this.partialFilled)
    this.partial = grown
    return grown
  }

  /** Keep the unparsed rest of a chunk, ahead of what waits already, while a message inflates. */
  private park (chunk: Buffer, off: number): void {
    if (!this.inflating || off >= chunk.length) return
    const rest = chunk.subarray(off)
    if (this.queuedHead > 0) this.queued[--this.queuedHead] = rest
    else this.queued.unshift(rest)
    this.queuedBytes += rest.length
    this.host.onBacklog(this.queuedBytes)
  }

  /** Header checks on the first byte, the mask bit and the length code. Returns false after failing. */
  private checkHeader (b0: number, masked: boolean, lengthCode: number): boolean {
    const fin = (b0 & 0x80) !== 0
    const rsv1 = (b0 & 0x40) !== 0
    const opcode = b0 & 0x0f
    if ((b0 & 0x30) !== 0) {
      this.fail(closingError(new FST_WS_PROTOCOL_ERROR('RSV2 or RSV3 set without a negotiated extension'), 1002))
      return false
    }
    if (masked !== this.isServer) {
      this.fail(closingError(new FST_WS_PROTOCOL_ERROR(this.isServer ? 'client frame is not masked' : 'server frame is masked'), 1002))
      return false
    }
    if (opcode >= 8) {
      if (opcode > OPCODE_PONG) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR(`reserved opcode 0x${opcode.toString(16)}`), 1002))
        return false
      }
      if (!fin) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR('fragmented control frame'), 1002))
        return false
      }
      if (lengthCode > 125) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR('control frame payload over 125 bytes'), 1002))
        return false
      }
      if (rsv1) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR('RSV1 set on a control frame'), 1002))
        return false
      }
    } else if (opcode === OPCODE_CONTINUATION) {
      if (this.messageOpcode === 0) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR('continuation frame without a message to continue'), 1002))
        return false
      }
      if (rsv1) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR('RSV1 set on a continuation frame'), 1002))
        return false
      }
    } else if (opcode === OPCODE_TEXT || opcode === OPCODE_BINARY) {
      if (this.messageOpcode !== 0) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR('new data frame inside an unfinished fragmented message'), 1002))
        return false
      }
      if (rsv1 && this.deflate === null) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR('RSV1 set without a negotiated extension'), 1002))
        return false
      }
    } else {
      this.fail(closingError(new FST_WS_PROTOCOL_ERROR(`reserved opcode 0x${opcode.toString(16)}`), 1002))
      return false
    }
    this.fin = fin
    this.rsv1 = rsv1
    this.opcode = opcode
    this.masked = masked
    return true
  }

  /** Handle one complete frame. Returns false when parsing must pause or stop. */
  private frame (payload: Buffer): boolean {
    const opcode = this.opcode
    if (opcode >= 8) return this.control(opcode, payload)
    // Whether this frame's text was already fed to the UTF-8 stream as its pieces arrived.
    const checked = this.streamText
    this.streamText = false
    if (opcode !== OPCODE_CONTINUATION) {
      // First frame of a message.
      if (this.fin && !this.rsv1) {
        if (opcode === OPCODE_TEXT && !(checked ? this.utf8.end() : isUtf8(payload))) {
          this.fail(closingError(new FST_WS_INVALID_UTF8('text message'), 1007))
          return false
        }
        this.host.onMessage(payload, opcode === OPCODE_BINARY)
        return this.state !== STOPPED
      }
      this.messageOpcode = opcode
      this.messageCompressed = this.rsv1
      this.messageLength = 0
      if (opcode === OPCODE_TEXT && !checked) this.utf8.reset()
    }
    if (payload.length > 0) {
      if (this.messageOpcode === OPCODE_TEXT && !this.messageCompressed && !checked &&
          !this.utf8.write(payload, 0, payload.length)) {
        this.fail(closingError(new FST_WS_INVALID_UTF8('text message'), 1007))
        return false
      }
      this.append(payload)
    }
    if (!this.fin) return true
    const data = this.messageBuffer === null ? EMPTY_BUFFER : this.messageBuffer.subarray(0, this.messageLength)
    const isBinary = this.messageOpcode === OPCODE_BINARY
    const compressed = this.messageCompressed
    this.messageBuffer = null
    this.messageLength = 0
    this.messageOpcode = 0
    this.messageCompressed = false
    if (compressed) {
      this.opcode = isBinary ? OPCODE_BINARY : OPCODE_TEXT
      this.inflating = true
      this.deflate!.decompress(data, this.onInflated!)
      return false
    }
    if (!isBinary && !this.utf8.end()) {
      this.fail(closingError(new FST_WS_INVALID_UTF8('text message'), 1007))
      return false
    }
    this.host.onMessage(data, isBinary)
    return this.state !== STOPPED
  }

  /** Grow the message buffer geometrically (bounded by maxPayload) and copy the fragment in. */
  private append (payload: Buffer): void {
    const needed = this.messageLength + payload.length
    let buf = this.messageBuffer
    if (buf === null || buf.length < needed) {
      let capacity = buf === null ? Math.max(needed, 1024) : Math.max(needed, buf.length * 2)
      if (capacity > this.maxPayload) capacity = Math.max(needed, this.maxPayload)
      const grown = Buffer.allocUnsafe(capacity)
      if (buf !== null) buf.copy(grown, 0, 0, this.messageLength)
      buf = this.messageBuffer = grown
    }
    payload.copy(buf, this.messageLength)
    this.messageLength = needed
  }

  private inflated (err: InflateError | null, data: Buffer | null): void {
    this.inflating = false
    if (this.state === STOPPED) return
    if (err !== null || data === null) {
      const closeCode = err?.closeCode ?? 1007
      const message = err?.message ?? 'inflate failed'
      this.fail(closingError(closeCode === 1009 ? new FST_WS_MESSAGE_TOO_BIG(message) : new FST_WS_DEFLATE_ERROR(message), closeCode))
      return
    }
    const isBinary = this.opcode === OPCODE_BINARY
    if (!isBinary && !isUtf8(data)) {
      this.fail(closingError(new FST_WS_INVALID_UTF8('text message'), 1007))
      return
    }
    this.host.onMessage(data, isBinary)
    // Catch up on what arrived meanwhile, until the next compressed message starts inflating (or all is parsed).
    const queued = this.queued
    while (!this.inflating && this.state !== STOPPED && this.queuedHead < queued.length) {
      const chunk = queued[this.queuedHead]!
      queued[this.queuedHead++] = undefined
      this.queuedBytes -= chunk.length
      this.feed(chunk)
    }
    if (this.state === STOPPED) return
    if (this.queuedHead === queued.length) {
      this.queued = []
      this.queuedHead = 0
    } else if (this.queuedHead > 1024 && this.queuedHead * 2 > queued.length) {
      // A peer that keeps the backlog from ever emptying must not grow the array by a slot per read.
      this.queued = queued.slice(this.queuedHead)
      this.queuedHead = 0
    }
    this.host.onBacklog(this.queuedBytes)
  }

  private control (opcode: number, payload: Buffer): boolean {
    if (opcode === OPCODE_PING) {
      this.host.onPing(payload)
      return this.state !== STOPPED
    }
    if (opcode === OPCODE_PONG) {
      this.host.onPong(payload)
      return this.state !== STOPPED
    }
    // OPCODE_CLOSE
    if (payload.length === 1) {
      this.fail(closingError(new FST_WS_PROTOCOL_ERROR('close frame with a 1-byte payload'), 1002))
      return false
    }
    let code = 1005
    let reason = ''
    if (payload.length >= 2) {
      code = payload.readUInt16BE(0)
      if (!isValidReceivedCloseCode(code)) {
        this.fail(closingError(new FST_WS_PROTOCOL_ERROR(`invalid close code ${code}`), 1002))
        return false
      }
      const reasonBytes = payload.subarray(2)
      if (!isUtf8(reasonBytes)) {
        this.fail(closingError(new FST_WS_INVALID_UTF8('close reason'), 1007))
        return false
      }
      reason = reasonBytes.toString()
    }
    this.stop()
    this.host.onCloseFrame(code, reason)
    return false
  }

  private fail (err: ClosingError): void {
    this.stop()
    this.host.onProtocolError(err)
  }
}
