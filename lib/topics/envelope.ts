/**
 * How a topic message is put on the wire: the one place a topic message becomes a frame, called once per message
 * per instance (whatever the number of local subscribers) and once per replayed message.
 *
 * A client can only resume (`subscribe(topic, { since })`) from a position it knows, so the broker can wrap each
 * message in an envelope that carries it:
 * - 'none' (default): the payload as published; the client learns positions some other way (or not at all).
 * - 'json': a text frame `{"topic":"…","epoch":"…","offset":N,"data":<payload>}`. A text payload is inserted
 *   verbatim, so it must be JSON text (what `channel()` and `JSON.stringify` produce); a binary payload becomes
 *   `"data":"<base64>","binary":true`.
 * - a function: called with the message and its position, returns what to send (string: text, bytes: binary).
 */
import { OPCODE_BINARY, OPCODE_TEXT } from '../protocol/constants.js'
import { encodeFrame } from '../protocol/sender.js'
import { toBytes, type SendData } from '../socket/send-data.js'

export interface TopicMessage {
  topic: string
  epoch: string
  offset: number
  data: Buffer
  binary: boolean
}

export type TopicEnvelope = 'none' | 'json' | ((message: TopicMessage) => SendData)

/** Frame one topic message for every local subscriber. */
export function frameTopicMessage (envelope: TopicEnvelope, message: TopicMessage): Buffer {
  if (envelope === 'none') return encodeFrame(message.binary ? OPCODE_BINARY : OPCODE_TEXT, message.data)
  if (envelope === 'json') return encodeFrame(OPCODE_TEXT, jsonEnvelope(message))
  const out = envelope(message)
  return encodeFrame(typeof out === 'string' ? OPCODE_TEXT : OPCODE_BINARY, toBytes(out))
}

function jsonEnvelope (m: TopicMessage): Buffer {
  const head = `{"topic":${JSON.stringify(m.topic)},"epoch":"${m.epoch}","offset":${m.offset},"data":`
  if (m.binary) return Buffer.from(`${head}"${m.data.toString('base64')}","binary":true}`)
  const headLength = Buffer.byteLength(head)
  const out = Buffer.allocUnsafe(headLength + m.data.length + 1)
  out.write(head, 0)
  m.data.copy(out, headLength)
  out[out.length - 1] = 0x7d // '}'
  return out
}

/** Checks the `envelope` option of a broker (brokers validate their own options once, in their constructor). */
export function isTopicEnvelope (value: unknown): value is TopicEnvelope {
  return value === 'none' || value === 'json' || typeof value === 'function'
}
