// WebSocket frames for tests, written straight from RFC 6455 §5.2 and independent of lib/: one encoder (every
// header bit, masked or not, forged length fields) and one decoder of complete frames.
import { randomBytes } from 'node:crypto'

export interface FrameOptions {
  /** Default true. */
  fin?: boolean
  rsv1?: boolean
  rsv2?: boolean
  rsv3?: boolean
  /** true (default): a random mask key, as a client sends; a 4-byte Buffer: this key; false: unmasked. */
  mask?: boolean | Buffer
  /** Write this 7-bit length code instead of the one the payload needs (forged headers). */
  lengthCode?: number
  /** With lengthCode 126 or 127: the value of the extended length field (default: the payload length). */
  extendedLength?: number | bigint
}

export interface FrameSpec extends FrameOptions {
  opcode: number
  payload?: Buffer | string
}

/** A fixed, non-zero mask key, for byte-for-byte reproducible frames. */
export const FIXED_MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d])

/** Encode one frame. */
export function frame (opcode: number, payload: Buffer | string = Buffer.alloc(0), opts: FrameOptions = {}): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const len = data.length
  const key = opts.mask === false ? null : Buffer.isBuffer(opts.mask) ? opts.mask : randomBytes(4)
  const code = opts.lengthCode ?? (len < 126 ? len : len < 65536 ? 126 : 127)
  const ext = code === 126 ? 2 : code === 127 ? 8 : 0
  const out = Buffer.alloc(2 + ext + (key === null ? 0 : 4) + len)
  out[0] = (opts.fin === false ? 0 : 0x80) | (opts.rsv1 === true ? 0x40 : 0) | (opts.rsv2 === true ? 0x20 : 0) |
    (opts.rsv3 === true ? 0x10 : 0) | (opcode & 0x0f)
  out[1] = (key === null ? 0 : 0x80) | (code & 0x7f)
  const extended = BigInt(opts.extendedLength ?? len)
  if (code === 126) out.writeUInt16BE(Number(extended & 0xffffn), 2)
  if (code === 127) out.writeBigUInt64BE(extended & 0xffffffffffffffffn, 2)
  let p = 2 + ext
  if (key === null) {
    data.copy(out, p)
    return out
  }
  key.copy(out, p, 0, 4)
  p += 4
  for (let i = 0; i < len; i++) out[p + i] = data[i]! ^ key[i & 3]!
  return out
}

/** Encode several frames into one buffer; `defaults` apply where a spec does not say. */
export function frames (specs: FrameSpec[], defaults: FrameOptions = {}): Buffer {
  return Buffer.concat(specs.map((s) => frame(s.opcode, s.payload, { ...defaults, ...s })))
}

/** A Close payload: the code (none: empty payload) and the reason. */
export function closePayload (code?: number, reason: string | Buffer = ''): Buffer {
  if (code === undefined) return Buffer.alloc(0)
  const r = typeof reason === 'string' ? Buffer.from(reason) : reason
  const b = Buffer.alloc(2 + r.length)
  b.writeUInt16BE(code, 0)
  r.copy(b, 2)
  return b
}

/** A Close frame (masked unless `opts.mask` says otherwise). */
export function closeFrame (code?: number, reason: string | Buffer = '', opts: FrameOptions = {}): Buffer {
  return frame(0x8, closePayload(code, reason), opts)
}

/** Close code and reason of a Close payload (1005 when it has no code). */
export function parseClose (payload: Buffer): { code: number, reason: string } {
  if (payload.length < 2) return { code: 1005, reason: '' }
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString() }
}

export interface ParsedFrame {
  fin: boolean
  /** The three RSV bits as a number (RSV1 = 4). */
  rsv: number
  rsv1: boolean
  opcode: number
  masked: boolean
  /** Unmasked, and a copy: it does not hold on to the read buffer. */
  payload: Buffer
}

/** Decode the complete frames at the front of `buf`; returns them and the bytes of an incomplete last frame. */
export function parseFrames (buf: Buffer): { frames: ParsedFrame[], rest: Buffer } {
  const out: ParsedFrame[] = []
  let off = 0
  while (buf.length - off >= 2) {
    const b0 = buf[off]!
    const b1 = buf[off + 1]!
    let len = b1 & 0x7f
    let p = off + 2
    if (len === 126) {
      if (buf.length - p < 2) break
      len = buf.readUInt16BE(p)
      p += 2
    } else if (len === 127) {
      if (buf.length - p < 8) break
      len = Number(buf.readBigUInt64BE(p))
      p += 8
    }
    const masked = (b1 & 0x80) !== 0
    let key: Buffer | null = null
    if (masked) {
      if (buf.length - p < 4) break
      key = buf.subarray(p, p + 4)
      p += 4
    }
    if (buf.length - p < len) break
    const payload = Buffer.from(buf.subarray(p, p + len))
    if (key !== null) for (let i = 0; i < len; i++) payload[i] ^= key[i & 3]!
    out.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, rsv1: (b0 & 0x40) !== 0, opcode: b0 & 0x0f, masked, payload })
    off = p + len
  }
  return { frames: out, rest: buf.subarray(off) }
}
