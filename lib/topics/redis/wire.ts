/**
 * What travels through Redis for one topic message, and its decoding on each instance. The PUBLISH script
 * builds `epoch \n offset \n flags \n origin \n payload` (scripts.ts); history entries hold the same fields in a
 * stream entry. `origin` is `instance:socket` when the publisher excluded a socket (`except`), else empty.
 */
import type { TopicMessage } from '../envelope.js'

export interface WireMessage extends TopicMessage {
  origin: string
}

const NL = 0x0a

/** Decode a pub/sub message of `topic`; null when it is not one of ours (a foreign publisher on the channel). */
export function decodeLive (topic: string, buf: Buffer): WireMessage | null {
  const a = buf.indexOf(NL)
  const b = a < 0 ? -1 : buf.indexOf(NL, a + 1)
  const c = b < 0 ? -1 : buf.indexOf(NL, b + 1)
  const d = c < 0 ? -1 : buf.indexOf(NL, c + 1)
  if (d < 0 || c !== b + 2) return null
  const offset = Number(buf.toString('latin1', a + 1, b))
  if (!Number.isSafeInteger(offset) || offset < 1) return null
  return {
    topic,
    epoch: buf.toString('latin1', 0, a),
    offset,
    binary: buf[b + 1] === 0x31,
    origin: buf.toString('latin1', c + 1, d),
    data: buf.subarray(d + 1)
  }
}

/** Decode history entries (as XREVRANGE returns them, newest first) into messages, oldest first. */
export function decodeHistory (topic: string, epoch: string, entries: unknown): WireMessage[] | null {
  if (!Array.isArray(entries)) return null
  const out: WireMessage[] = new Array(entries.length)
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as unknown
    const fields = Array.isArray(entry) ? entry[1] as unknown : null
    if (!Array.isArray(fields)) return null
    const m: WireMessage = { topic, epoch, offset: 0, binary: false, origin: '', data: EMPTY }
    for (let f = 0; f + 1 < fields.length; f += 2) {
      const key = String(fields[f])
      const value = fields[f + 1] as unknown
      if (key === 'o') m.offset = Number(String(value))
      else if (key === 'f') m.binary = String(value) === '1'
      else if (key === 'x') m.origin = String(value)
      else if (key === 'd') m.data = Buffer.isBuffer(value) ? value : Buffer.from(String(value))
    }
    if (!Number.isSafeInteger(m.offset) || m.offset < 1) return null
    out[entries.length - 1 - i] = m
  }
  return out
}

/** The history entries after offset `after` up to `last`, oldest first: all of them, or null when some are gone. */
export function decodeRange (topic: string, epoch: string, entries: unknown, after: number, last: number): WireMessage[] | null {
  if (after >= last) return []
  const messages = decodeHistory(topic, epoch, entries)
  return messages !== null && messages.length === last - after && messages[0].offset === after + 1 ? messages : null
}

const EMPTY = Buffer.alloc(0)
