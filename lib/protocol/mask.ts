/**
 * XOR masking (RFC 6455 §5.3). The same operation masks and unmasks.
 * Long payloads are processed 32 bits at a time over the aligned middle.
 */
import { endianness } from 'node:os'

const LITTLE_ENDIAN = endianness() === 'LE'
/**
 * Below it, four bytes per step with the mask bytes in locals; from it, 32-bit words over a Uint32Array view (one
 * allocation per call, which only pays off on longer payloads). Measured on this VM (ns per call, Node 20):
 * 16 B 42 -> 16, 56 B 59 -> 38, 128 B 90 -> 85 (even); the word loop wins from 256 B (114 against 158).
 */
const WORD_THRESHOLD = 128

/** XOR `buf[start, end)` in place with the 4-byte `mask`, the mask starting at byte 0 of the range. */
export function applyMask (buf: Buffer, mask: Buffer, start: number, end: number): void {
  const len = end - start
  if (len < WORD_THRESHOLD) {
    const m0 = mask[0]!
    const m1 = mask[1]!
    const m2 = mask[2]!
    const m3 = mask[3]!
    let i = start
    const stop = start + (len & ~3)
    for (; i < stop; i += 4) {
      buf[i] ^= m0
      buf[i + 1] ^= m1
      buf[i + 2] ^= m2
      buf[i + 3] ^= m3
    }
    if (i < end) {
      buf[i] ^= m0
      if (i + 1 < end) {
        buf[i + 1] ^= m1
        if (i + 2 < end) buf[i + 2] ^= m2
      }
    }
    return
  }
  const base = buf.byteOffset + start
  const head = (4 - (base & 3)) & 3
  let i = 0
  for (; i < head; i++) buf[start + i] ^= mask[i & 3]!
  const words = (len - head) >>> 2
  const m0 = mask[head & 3]!
  const m1 = mask[(head + 1) & 3]!
  const m2 = mask[(head + 2) & 3]!
  const m3 = mask[(head + 3) & 3]!
  const word = LITTLE_ENDIAN
    ? (m0 | (m1 << 8) | (m2 << 16) | (m3 << 24)) >>> 0
    : ((m0 << 24) | (m1 << 16) | (m2 << 8) | m3) >>> 0
  const u32 = new Uint32Array(buf.buffer, base + head, words)
  for (let w = 0; w < words; w++) u32[w] ^= word
  i = head + words * 4
  for (; i < len; i++) buf[start + i] ^= mask[i & 3]!
}

/** Copy `src` into `dst` at `offset`, masked: used by the client role, which must not modify the caller's data. */
export function copyMasked (src: Buffer, dst: Buffer, offset: number, mask: Buffer): void {
  src.copy(dst, offset)
  applyMask(dst, mask, offset, offset + src.length)
}
