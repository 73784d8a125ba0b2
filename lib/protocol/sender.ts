/**
 * RFC 6455 frame writer (§5.2). Server role sends unmasked frames; client
 * role masks every frame with a fresh random key and never touches the
 * caller's buffer. Small frames are written as one buffer (header and payload
 * copied together); large payloads are written after their header without
 * copying. Every write happens with the socket corked until the next tick,
 * so all the frames a tick produces for a socket leave in a single writev.
 */
import type { Duplex } from 'node:stream'
import { randomFillSync } from 'node:crypto'
import { OPCODE_CLOSE, OPCODE_TEXT, EMPTY_BUFFER } from './constants.js'
import { applyMask } from './mask.js'
import type { PerMessageDeflate } from '../extensions/permessage-deflate/codec.js'

/** Payloads up to this size are copied next to their header: one small write beats two. */
const COPY_THRESHOLD = 16 * 1024
/** Most bytes of small frames joined into one write: a socket read's worth, so a reader can pause between them. */
const MAX_SMALL_BATCH = 64 * 1024

/**
 * Small unmasked text frames (the server's replies) are encoded straight into a slab shared by every socket,
 * instead of a buffer each: a socket's frames of one tick are usually next to each other there, so they leave as
 * one slice of the slab, without being allocated one by one nor joined. A new slab is taken when one is full;
 * an old one lives as long as a write still holds a slice of it (Node's own Buffer pool works the same way).
 */
const SLAB_SIZE = 32 * 1024
/** Texts up to this many UTF-16 units go into the slab: at most 3 bytes each, plus a 4-byte header, is 4 KiB. */
const SLAB_MAX_TEXT = 1364
let slab: Buffer | null = null
let slabUsed = 0
/** `Sender.small` while the tick's frames are only an open slice of the slab (never pushed into). */
const NO_PIECES: Buffer[] = []

/** Called once a frame has been handed to the operating system, or with the reason it never will be. */
export type WriteCallback = (err?: Error | null) => void

const MASK_POOL_SIZE = 8 * 1024
let maskPool: Buffer | null = null
let maskPoolOffset = MASK_POOL_SIZE

function nextMask (): Buffer {
  if (maskPool === null || maskPoolOffset === MASK_POOL_SIZE) {
    maskPool = randomFillSync(Buffer.allocUnsafe(MASK_POOL_SIZE))
    maskPoolOffset = 0
  }
  const mask = maskPool.subarray(maskPoolOffset, maskPoolOffset + 4)
  maskPoolOffset += 4
  return mask
}

/**
 * The one way a user's write callback is called. Node calls a write callback with no error when the socket was
 * destroyed while the write was in flight (a peer that vanished mid-send): that is reported as the failure it is.
 * A callback that throws is reported to the host instead of unwinding through Node's stream machinery (where it
 * would be an uncaught exception). Only sends that pass a callback pay for this.
 */
function guarded (sender: Sender, cb: WriteCallback | undefined): WriteCallback | undefined {
  if (cb === undefined) return undefined
  return (err) => {
    if ((err === undefined || err === null) && sender.socketDestroyed) err = new Error('WebSocket closed before the message was sent')
    callSafely(sender, cb, err)
  }
}

function callSafely (sender: Sender, cb: WriteCallback, err: Error | null | undefined): void {
  try {
    cb(err)
  } catch (thrown) {
    sender.reportCallbackError(thrown)
  }
}

function headerLength (payloadLength: number, masked: boolean): number {
  const base = payloadLength < 126 ? 2 : payloadLength < 65536 ? 4 : 10
  return masked ? base + 4 : base
}

/** Write a frame header into `buf` at 0; returns the header length. */
function writeHeader (buf: Buffer, opcode: number, payloadLength: number, fin: boolean, rsv1: boolean, mask: Buffer | null): number {
  buf[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode
  let p = 2
  const maskBit = mask === null ? 0 : 0x80
  if (payloadLength < 126) {
    buf[1] = maskBit | payloadLength
  } else if (payloadLength < 65536) {
    buf[1] = maskBit | 126
    buf.writeUInt16BE(payloadLength, 2)
    p = 4
  } else {
    buf[1] = maskBit | 127
    buf.writeUInt32BE(Math.floor(payloadLength / 0x100000000), 2)
    buf.writeUInt32BE(payloadLength >>> 0, 6)
    p = 10
  }
  if (mask !== null) {
    buf[p] = mask[0]!
    buf[p + 1] = mask[1]!
    buf[p + 2] = mask[2]!
    buf[p + 3] = mask[3]!
    p += 4
  }
  return p
}

/** A whole frame in one buffer: the bytes a topic publish writes to every subscriber. */
export function encodeFrame (opcode: number, payload: Buffer, fin = true, rsv1 = false, masked = false): Buffer {
  const mask = masked ? nextMask() : null
  const hl = headerLength(payload.length, masked)
  const out = Buffer.allocUnsafe(hl + payload.length)
  writeHeader(out, opcode, payload.length, fin, rsv1, mask)
  payload.copy(out, hl)
  if (mask !== null) applyMask(out, mask, hl, out.length)
  return out
}

/**
 * Senders corked during this tick. Each is uncorked once on the next tick, so everything a tick writes to
 * a socket (echo replies to a batch of frames, many publishes) leaves in one writev instead of one system
 * call per frame.
 */
let corkedSenders: Sender[] = []

/** Write out every batch now (normally done on the next tick). */
export function flushBatches (): void {
  uncorkAll()
}

function uncorkAll (): void {
  const list = corkedSenders
  corkedSenders = []
  for (let i = 0; i < list.length; i++) list[i]!.uncork()
}

export interface SenderHost {
  onSendError (err: Error): void
  /** A user's write callback threw. */
  onCallbackError (err: unknown): void
}

const KIND_FRAME = 0
const KIND_COMPRESS = 1
const KIND_RAW = 2
const KIND_END = 3

interface QueuedMessage {
  opcode: number
  data: Buffer
  /** 0: frame it; 1: compress and frame it; 2: already a whole frame; 3: end the socket */
  kind: number
  cb: WriteCallback | undefined
}

export class Sender {
  private readonly socket: Duplex
  private readonly masked: boolean
  readonly deflate: PerMessageDeflate | null
  /** Messages waiting behind one being compressed, in order. */
  private queue: QueuedMessage[] = []
  private queuedBytes = 0
  private compressing = false
  private corked = false
  /**
   * This tick's small frames, written to the socket as one buffer when the tick's batch is flushed: one
   * socket.write() per socket per tick instead of one per frame. Anything written otherwise flushes them first,
   * so order is kept.
   */
  private small: Buffer[] | null = null
  private smallBytes = 0
  private smallCbs: WriteCallback[] | null = null
  /** The slab this tick's latest text frames were encoded into, and where they are: `[openStart, openEnd)`. */
  private openSlab: Buffer | null = null
  private openStart = 0
  private openEnd = 0
  /** Bound once, and only on sockets that negotiated compression. */
  private readonly onCompressed: ((err: Error | null, data: Buffer | null) => void) | null
  /** Told when compression fails: the connection must fail. */
  private readonly host: SenderHost | null

  constructor (socket: Duplex, isClient: boolean, host: SenderHost | null = null, deflate: PerMessageDeflate | null = null) {
    this.socket = socket
    this.masked = isClient
    this.host = host
    this.deflate = deflate
    this.onCompressed = deflate === null ? null : this.compressed.bind(this)
  }

  /** Cork the socket until the next tick (once per tick). */
  private batch (): void {
    if (this.corked) return
    this.corked = true
    this.socket.cork()
    if (corkedSenders.push(this) === 1) process.nextTick(uncorkAll)
  }

  /** @internal Called by the next-tick flush. */
  uncork (): void {
    this.corked = false
    if (this.small !== null) this.flushSmall()
    this.socket.uncork()
  }

  /** Keep a small frame for this tick's single write. */
  private pushSmall (out: Buffer, cb: WriteCallback | undefined): boolean {
    this.batch()
    if (this.small !== null && this.smallBytes + out.length > MAX_SMALL_BATCH) this.flushSmall()
    if (this.openSlab !== null) this.closeSlice()
    if (this.small === null || this.small === NO_PIECES) this.small = [out]
    else this.small.push(out)
    this.smallBytes += out.length
    return this.afterSmall(cb)
  }

  private afterSmall (cb: WriteCallback | undefined): boolean {
    if (cb !== undefined) {
      if (this.smallCbs === null) this.smallCbs = [cb]
      else this.smallCbs.push(cb)
    }
    return this.socket.writableLength + this.smallBytes < this.socket.writableHighWaterMark
  }

  /**
   * Encode a small text frame (unmasked: the server's) into the slab, next to this tick's previous ones when they
   * are the slab's last bytes, and keep it for this tick's single write. No byteLength pass: the header's size
   * follows from the text's length, except for 42-125 units of text that encode to 126 bytes or more (then the
   * payload moves 2 bytes up).
   */
  private pushSmallText (text: string, cb: WriteCallback | undefined): boolean {
    this.batch()
    let buf = slab
    if (buf === null || SLAB_SIZE - slabUsed < text.length * 3 + 4) {
      buf = slab = Buffer.allocUnsafe(SLAB_SIZE)
      slabUsed = 0
    }
    const start = slabUsed
    let hl = text.length < 126 ? 2 : 4
    const length = buf.write(text, start + hl)
    if (hl === 2 && length > 125) {
      buf.copyWithin(start + 4, start + 2, start + 2 + length)
      hl = 4
    }
    buf[start] = 0x80 | OPCODE_TEXT
    if (hl === 2) {
      buf[start + 1] = length
    } else {
      buf[start + 1] = 126
      buf[start + 2] = length >>> 8
      buf[start + 3] = length & 0xff
    }
    const end = start + hl + length
    slabUsed = end
    // (The open slice ends before this frame: flushing writes what came before it.)
    if (this.small !== null && this.smallBytes + (end - start) > MAX_SMALL_BATCH) this.flushSmall()
    if (this.openSlab === buf && this.openEnd === start) {
      this.openEnd = end
    } else {
      if (this.openSlab !== null) this.closeSlice()
      if (this.small === null) this.small = NO_PIECES
      this.openSlab = buf
      this.openStart = start
      this.openEnd = end
    }
    this.smallBytes += end - start
    return this.afterSmall(cb)
  }

  /** The open slice of the slab becomes one of this tick's pieces (another socket wrote after it, or a frame of another kind follows). */
  private closeSlice (): void {
    const piece = this.openSlab!.subarray(this.openStart, this.openEnd)
    this.openSlab = null
    if (this.small === null || this.small === NO_PIECES) this.small = [piece]
    else this.small.push(piece)
  }

  /** Write this tick's small frames now, as one buffer (before anything written otherwise, to keep order). */
  private flushSmall (): void {
    if (this.openSlab !== null) this.closeSlice()
    const small = this.small!
    const cbs = this.smallCbs
    const bytes = this.smallBytes
    this.small = null
    this.smallCbs = null
    this.smallBytes = 0
    // A slice of the slab that would wait in the stream behind earlier writes is copied out, so that a slow
    // socket does not keep a whole slab alive.
    const data = small.length === 1
      ? (this.socket.writableLength > 0 && small[0]!.buffer.byteLength === SLAB_SIZE ? Buffer.from(small[0]!) : small[0]!)
      : Buffer.concat(small, bytes)
    if (cbs === null) this.socket.write(data)
    else if (cbs.length === 1) this.socket.write(data, cbs[0])
    else this.socket.write(data, (err) => { for (let i = 0; i < cbs.length; i++) cbs[i]!(err) })
  }

  /** @internal For guarded(): whether the socket is gone. */
  get socketDestroyed (): boolean {
    return this.socket.destroyed
  }

  /** @internal For callSafely(): a user's write callback threw. */
  reportCallbackError (err: unknown): void {
    if (this.host !== null) this.host.onCallbackError(err)
  }

  /** Whether messages wait behind a compression. */
  get hasQueued (): boolean {
    return this.queue.length > 0
  }

  /** Bytes accepted but not yet handed to the socket (waiting for compression, or for this tick's write). */
  get pendingBytes (): number {
    return this.queuedBytes + this.smallBytes
  }

  /** Send a text message from a string, encoding it straight into the frame buffer. */
  sendText (text: string, cb?: WriteCallback): boolean {
    const deflate = this.deflate
    if (this.compressing || (deflate !== null && text.length * 3 >= deflate.threshold)) {
      return this.sendMessage(OPCODE_TEXT, Buffer.from(text), cb)
    }
    if (!this.masked && text.length <= SLAB_MAX_TEXT) return this.pushSmallText(text, guarded(this, cb))
    const length = Buffer.byteLength(text)
    const hl = headerLength(length, this.masked)
    const mask = this.masked ? nextMask() : null
    const out = Buffer.allocUnsafe(hl + length)
    writeHeader(out, OPCODE_TEXT, length, true, false, mask)
    out.write(text, hl)
    if (mask !== null) applyMask(out, mask, hl, out.length)
    if (length <= COPY_THRESHOLD) return this.pushSmall(out, guarded(this, cb))
    this.batch()
    if (this.small !== null) this.flushSmall()
    return this.socket.write(out, guarded(this, cb))
  }

  /** Send one whole data message (text or binary), compressing it when negotiated and large enough. */
  sendMessage (opcode: number, data: Buffer, cb?: WriteCallback): boolean {
    const deflate = this.deflate
    const compress = deflate !== null && data.length >= deflate.threshold
    if (compress || this.compressing) {
      this.queue.push({ opcode, data, kind: compress ? KIND_COMPRESS : KIND_FRAME, cb })
      this.queuedBytes += data.length
      if (!this.compressing) this.next()
      return false
    }
    return this.frame(opcode, data, true, false, cb)
  }

  /** Send a control frame now (ping/pong may pass queued messages); a Close waits behind queued messages. */
  sendControl (opcode: number, data: Buffer, cb?: WriteCallback): boolean {
    if (opcode === OPCODE_CLOSE && this.compressing) {
      this.queue.push({ opcode, data, kind: KIND_FRAME, cb })
      this.queuedBytes += data.length
      return false
    }
    return this.frame(opcode, data, true, false, cb)
  }

  /** Write bytes that are already a whole frame (shared by every subscriber of a topic), in order. */
  writeRaw (frame: Buffer): void {
    if (this.compressing) {
      this.queue.push({ opcode: 0, data: frame, kind: KIND_RAW, cb: undefined })
      this.queuedBytes += frame.length
      return
    }
    this.batch()
    if (this.small !== null) this.flushSmall()
    this.socket.write(frame)
  }

  /** Call `cb` once everything sent so far, including messages still waiting for compression, is written. */
  flush (cb: WriteCallback): void {
    if (this.compressing) this.queue.push({ opcode: 0, data: EMPTY_BUFFER, kind: KIND_RAW, cb })
    else {
      if (this.small !== null) this.flushSmall()
      this.socket.write(EMPTY_BUFFER, guarded(this, cb))
    }
  }

  /** Half-close the socket after everything queued so far (messages waiting for compression included). */
  end (): void {
    if (this.compressing) this.queue.push({ opcode: 0, data: EMPTY_BUFFER, kind: KIND_END, cb: undefined })
    else if (!this.socket.writableEnded) {
      if (this.small !== null) this.flushSmall()
      this.socket.end()
    }
  }

  /** Write one frame now. */
  frame (opcode: number, data: Buffer, fin: boolean, rsv1: boolean, cb?: WriteCallback): boolean {
    cb = guarded(this, cb)
    this.batch()
    const length = data.length
    const mask = this.masked ? nextMask() : null
    const hl = headerLength(length, mask !== null)
    if (length <= COPY_THRESHOLD || mask !== null) {
      const out = Buffer.allocUnsafe(hl + length)
      writeHeader(out, opcode, length, fin, rsv1, mask)
      if (length > 0) data.copy(out, hl)
      if (mask !== null && length > 0) applyMask(out, mask, hl, out.length)
      if (length <= COPY_THRESHOLD) return this.pushSmall(out, cb)
      if (this.small !== null) this.flushSmall()
      return this.socket.write(out, cb)
    }
    if (this.small !== null) this.flushSmall()
    const header = Buffer.allocUnsafe(hl)
    writeHeader(header, opcode, length, fin, rsv1, null)
    // The socket is corked (batch): header and payload leave together, the payload uncopied.
    this.socket.write(header)
    return this.socket.write(data, cb)
  }

  /** Drop queued messages (the connection is gone). Their callbacks get `err`. */
  abort (err: Error): void {
    const queue = this.queue
    this.queue = []
    this.queuedBytes = 0
    for (const item of queue) if (item.cb !== undefined) callSafely(this, item.cb, err)
  }

  private next (): void {
    while (this.queue.length > 0) {
      const item = this.queue[0]!
      if (item.kind === KIND_COMPRESS) {
        this.compressing = true
        this.deflate!.compress(item.data, this.onCompressed!)
        return
      }
      this.queue.shift()
      this.queuedBytes -= item.data.length
      if (item.kind === KIND_RAW) {
        if (this.small !== null) this.flushSmall()
        this.socket.write(item.data, guarded(this, item.cb))
      } else if (item.kind === KIND_END) {
        if (this.small !== null) this.flushSmall()
        if (!this.socket.writableEnded) this.socket.end()
      } else this.frame(item.opcode, item.data, true, false, item.cb)
    }
    this.compressing = false
  }

  private compressed (err: Error | null, data: Buffer | null): void {
    const item = this.queue.shift()
    if (item === undefined) return // aborted meanwhile
    this.queuedBytes -= item.data.length
    /* c8 ignore start -- zlib fails to deflate only when out of memory */
    if (err !== null || data === null) {
      this.compressing = false
      const error = err ?? new Error('compression failed')
      if (item.cb !== undefined) callSafely(this, item.cb, error)
      // What waited behind it is not sent (the connection fails), but a requested end still happens.
      const rest = this.queue
      this.queue = []
      this.queuedBytes = 0
      for (const r of rest) {
        if (r.kind === KIND_END) this.end()
        else if (r.cb !== undefined) callSafely(this, r.cb, error)
      }
      if (this.host !== null) this.host.onSendError(error)
      return
    }
    /* c8 ignore stop */
    this.frame(item.opcode, data, true, true, item.cb)
    this.next()
  }
}

