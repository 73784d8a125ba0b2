/** RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key before hashing. */
export const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

export const OPCODE_CONTINUATION = 0x0
export const OPCODE_TEXT = 0x1
export const OPCODE_BINARY = 0x2
export const OPCODE_CLOSE = 0x8
export const OPCODE_PING = 0x9
export const OPCODE_PONG = 0xa

/** readyState values, as in the WHATWG WebSocket interface. */
export const CONNECTING = 0 as const
export const OPEN = 1 as const
export const CLOSING = 2 as const
export const CLOSED = 3 as const

export const EMPTY_BUFFER: Buffer = Buffer.alloc(0)
