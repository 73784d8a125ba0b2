/**
 * What may be sent, and its one conversion to bytes: shared by `socket.send()`, `ping()`/`pong()` and
 * `app.websocketServer.publish()`, so that all of them accept the same values and refuse the rest with
 * FST_WS_INVALID_DATA.
 */
import { FST_WS_INVALID_DATA } from '../errors.js'

export type SendData = string | Buffer | ArrayBuffer | ArrayBufferView

/** The bytes of a binary value (no copy for a Buffer or a view). Throws FST_WS_INVALID_DATA for anything else. */
export function toBuffer (data: SendData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  throw new FST_WS_INVALID_DATA(data === null ? 'null' : typeof data)
}

/** The bytes of any sendable value: strings as UTF-8. */
export function toBytes (data: SendData): Buffer {
  return typeof data === 'string' ? Buffer.from(data) : toBuffer(data)
}
