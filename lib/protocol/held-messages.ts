/**
 * Messages received and not yet consumed (no 'message' listener yet, an async iterator not pulling), in order.
 * The connection owns this queue and its backpressure; this file owns what a held message really costs.
 *
 * A message straight from the parser is usually a view into the socket's read chunk (up to 64 KiB). Holding
 * the view would keep the whole chunk alive for a 1-byte message, so a view that covers less than half of its
 * backing memory is copied out when it is held, into memory of its own (not Node's shared 8 KiB pool, where one
 * live byte would pin a slab): what the queue counts is then within 2x of what it retains.
 */
export interface HeldMessage {
  /** The payload, or the value decoded from it (routes with message schemas). */
  data: unknown
  isBinary: boolean
  /** What it counts for: payload bytes plus HELD_MESSAGE_OVERHEAD. */
  size: number
}

/** What a held message counts for besides its payload: the queue entry, the Buffer and its ArrayBuffer (about 300 bytes of heap, measured). */
export const HELD_MESSAGE_OVERHEAD = 320

export class HeldMessages {
  private items: Array<HeldMessage | undefined> = []
  private head = 0
  /** Payload bytes plus HELD_MESSAGE_OVERHEAD per message. */
  bytes = 0

  get length (): number {
    return this.items.length - this.head
  }

  /** Hold a message of `length` payload bytes: a Buffer, or a value decoded from one (which pins no chunk). */
  push (data: unknown, isBinary: boolean, length: number): void {
    if (Buffer.isBuffer(data) && data.length * 2 < data.buffer.byteLength) data = exactCopy(data)
    const size = length + HELD_MESSAGE_OVERHEAD
    this.items.push({ data, isBinary, size })
    this.bytes += size
  }

  shift (): HeldMessage | undefined {
    if (this.head === this.items.length) return undefined
    const item = this.items[this.head]!
    this.items[this.head++] = undefined
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    this.bytes -= item.size
    return item
  }
}

function exactCopy (data: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(data.length)
  data.copy(copy)
  return copy
}
