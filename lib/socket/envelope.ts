/**
 * The `fastify-rfc6455.v1` subprotocol: a small envelope around a route's JSON messages that adds requests with
 * replies (both ways), liveness probes a browser can send, and resuming topics from the client's positions. A
 * route opts in by listing ENVELOPE_PROTOCOL in its `protocols` (with `messages` schemas); a socket that
 * negotiated it speaks it, the route's other sockets stay as they are. One JSON object per text frame:
 *
 *   {"m": M}                 a message (either way)
 *   {"q": id, "m": M}        a request (either way); id a positive integer, per sender
 *   {"r": id, "m": M}        its reply;  {"r": id, "e": "invalid" | "no-handler" | "failed"}  no reply
 *   {"topic", "epoch", "offset", "data"}   a topic message (server to client)
 *   {"resume": {topic: {epoch, offset}}}   the client's positions, its first frame on every connection
 *   {"gap": {topic, reason, epoch, offset}}  messages of a topic may be lost (server to client)
 *   {"p": n} / {"P": n}      a liveness probe from the client and its answer
 *
 * Messages (M) are validated and serialized by the route's schemas, as without the envelope.
 */
import type { TopicGap, TopicPosition } from '../topics/types.js'

export const ENVELOPE_PROTOCOL = 'fastify-rfc6455.v1'

/** Requests a socket may have unanswered towards its peer, and requests from the peer waiting for a handler. */
export const MAX_PENDING_REQUESTS = 1000

/** One inbound envelope, classified. */
export type Inbound =
  | { kind: 'message', value: unknown }
  | { kind: 'request', id: number, value: unknown }
  | { kind: 'reply', id: number, value: unknown, error: string | undefined }
  | { kind: 'resume', positions: Map<string, TopicPosition> }
  | { kind: 'probe', n: number }
  | { kind: 'bad', why: string }

function isId (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0
}

/** Classify a parsed frame; `maxTopics` bounds a resume frame. */
export function classify (frame: unknown, maxTopics: number): Inbound {
  if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) return { kind: 'bad', why: 'not an object' }
  const f = frame as Record<string, unknown>
  if ('q' in f) return isId(f.q) && 'm' in f ? { kind: 'request', id: f.q, value: f.m } : { kind: 'bad', why: 'a request needs a positive integer "q" and "m"' }
  if ('r' in f) {
    if (!isId(f.r)) return { kind: 'bad', why: 'a reply needs a positive integer "r"' }
    return { kind: 'reply', id: f.r, value: f.m, error: typeof f.e === 'string' ? f.e : undefined }
  }
  if ('m' in f) return { kind: 'message', value: f.m }
  if ('p' in f) return typeof f.p === 'number' && Number.isSafeInteger(f.p) ? { kind: 'probe', n: f.p } : { kind: 'bad', why: '"p" is an integer' }
  if ('resume' in f) return resume(f.resume, maxTopics)
  return { kind: 'bad', why: 'expected "m", "q", "r", "resume" or "p"' }
}

function resume (value: unknown, maxTopics: number): Inbound {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { kind: 'bad', why: '"resume" is an object' }
  const positions = new Map<string, TopicPosition>()
  for (const [topic, p] of Object.entries(value as Record<string, unknown>)) {
    if (positions.size >= maxTopics) return { kind: 'bad', why: `"resume" holds more than ${maxTopics} topics` }
    const pos = p as Partial<TopicPosition> | null
    if (typeof pos !== 'object' || pos === null || typeof pos.epoch !== 'string' || pos.epoch.length > 64 ||
        typeof pos.offset !== 'number' || !Number.isSafeInteger(pos.offset) || pos.offset < 0) {
      return { kind: 'bad', why: `"resume" position of ${JSON.stringify(topic.slice(0, 32))} is not { epoch, offset }` }
    }
    positions.set(topic, { epoch: pos.epoch, offset: pos.offset })
  }
  return { kind: 'resume', positions }
}

/** The outbound envelopes: the message is already serialized JSON text (by the route's `send` schema). */
export function messageFrame (json: string): string {
  return '{"m":' + json + '}'
}

export function requestFrame (id: number, json: string): string {
  return '{"q":' + id + ',"m":' + json + '}'
}

export function replyFrame (id: number, json: string): string {
  return '{"r":' + id + ',"m":' + json + '}'
}

export function replyErrorFrame (id: number, code: 'invalid' | 'no-handler' | 'failed'): string {
  return '{"r":' + id + ',"e":"' + code + '"}'
}

export function gapFrame (gap: TopicGap): string {
  return '{"gap":' + JSON.stringify({ topic: gap.topic, reason: gap.reason, epoch: gap.epoch, offset: gap.offset }) + '}'
}

export function probeAnswer (n: number): string {
  return '{"P":' + n + '}'
}
