/**
 * UTF-8 validation across fragment boundaries. The bulk of each fragment is
 * checked with `buffer.isUtf8`; only a trailing incomplete sequence (at most
 * 3 bytes) is carried to the next fragment, and that prefix is itself checked
 * so that an impossible sequence fails on the fragment that made it impossible.
 */
import { isUtf8 } from 'node:buffer'

/** Length of the sequence a lead byte starts, or 0 if it cannot start one. */
function sequenceLength (lead: number): number {
  if (lead < 0x80) return 1
  if (lead >= 0xc2 && lead <= 0xdf) return 2
  if (lead >= 0xe0 && lead <= 0xef) return 3
  if (lead >= 0xf0 && lead <= 0xf4) return 4
  return 0
}

/** Whether `bytes[0, len)` is a valid beginning of a multi-byte sequence (RFC 3629 table). */
function isValidPrefix (bytes: Uint8Array, len: number): boolean {
  const lead = bytes[0]!
  if (sequenceLength(lead) <= len) return false
  for (let i = 1; i < len; i++) {
    const b = bytes[i]!
    let lo = 0x80
    let hi = 0xbf
    if (i === 1) {
      if (lead === 0xe0) lo = 0xa0
      else if (lead === 0xed) hi = 0x9f
      else if (lead === 0xf0) lo = 0x90
      else if (lead === 0xf4) hi = 0x8f
    }
    if (b < lo || b > hi) return false
  }
  return true
}

export class Utf8Stream {
  private readonly carry = Buffer.alloc(4)
  private carryLen = 0

  reset (): void {
    this.carryLen = 0
  }

  /** Feed `buf[start, end)`. Returns false as soon as the bytes seen so far cannot be valid UTF-8. */
  write (buf: Buffer, start: number, end: number): boolean {
    let pos = start
    if (this.carryLen > 0) {
      const need = sequenceLength(this.carry[0]!) - this.carryLen
      const take = Math.min(need, end - pos)
      buf.copy(this.carry, this.carryLen, pos, pos + take)
      this.carryLen += take
      pos += take
      if (take < need) return isValidPrefix(this.carry, this.carryLen)
      if (!isUtf8(this.carry.subarray(0, this.carryLen))) return false
      this.carryLen = 0
    }
    if (pos >= end) return true
    // Find where a trailing incomplete sequence starts (look back at most 3 bytes).
    let cut = end
    for (let i = end - 1; i >= pos && i >= end - 3; i--) {
      const b = buf[i]!
      if ((b & 0xc0) === 0x80) continue // continuation byte: keep looking for the lead
      const len = sequenceLength(b)
      if (len > end - i) cut = i
      break
    }
    if (cut > pos && !isUtf8(buf.subarray(pos, cut))) return false
    if (cut < end) {
      buf.copy(this.carry, 0, cut, end)
      this.carryLen = end - cut
      return isValidPrefix(this.carry, this.carryLen)
    }
    return true
  }

  /** The message ended: valid only if no sequence is left incomplete. */
  end (): boolean {
    const ok = this.carryLen === 0
    this.carryLen = 0
    return ok
  }
}
