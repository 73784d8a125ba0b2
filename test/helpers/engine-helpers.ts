/**
 * Helpers for the engine tests: a frame builder written straight from
 * RFC 6455 §5.2, a recording ReceiverHost, a raw TCP client that performs
 * the opening handshake by hand, and a small parser for server frames.
 */
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import type { ReceiverHost } from '../../lib/protocol/receiver.js'
import fastifyWebSocket, { type WebSocketPluginOptions } from '../../lib/index.js'
import type { WebSocket } from '../../lib/socket/websocket.js'

export interface FrameSpec {
  opcode: number
  payload?: Buffer | string
  fin?: boolean
  rsv1?: boolean
  rsv2?: boolean
  rsv3?: boolean
  /** Force the mask bit (default: decided by the caller's role). */
  masked?: boolean
  /** Write this length field instead of the payload's (7-bit code, 16- or 64-bit value). */
  lengthCode?: number
  /** With lengthCode 127: the raw 64-bit length to write. */
  length64?: bigint
}

/** Encode one frame. `masked` is used unless the spec forces its own. The mask key is fixed but not zero. */
export function buildFrame (spec: FrameSpec, masked: boolean): Buffer {
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : (spec.payload ?? Buffer.alloc(0))
  const mask = spec.masked ?? masked
  const len = payload.length
  const code = spec.lengthCode ?? (len < 126 ? len : len < 65536 ? 126 : 127)
  const ext = code === 126 ? 2 : code === 127 ? 8 : 0
  const out = Buffer.alloc(2 + ext + (mask ? 4 : 0) + len)
  out[0] = (spec.fin === false ? 0 : 0x80) | (spec.rsv1 === true ? 0x40 : 0) | (spec.rsv2 === true ? 0x20 : 0) |
    (spec.rsv3 === true ? 0x10 : 0) | (spec.opcode & 0x0f)
  out[1] = (mask ? 0x80 : 0) | code
  if (code === 126) out.writeUInt16BE(len, 2)
  if (code === 127) out.writeBigUInt64BE(spec.length64 ?? BigInt(len), 2)
  let p = 2 + ext
  const key = Buffer.from([0x37, 0xfa, 0x21, 0x3d])
  if (mask) {
    key.copy(out, p)
    p += 4
  }
  for (let i = 0; i < len; i++) out[p + i] = mask ? payload[i]! ^ key[i % 4]! : payload[i]!
  return out
}

export function buildFrames (specs: FrameSpec[], masked: boolean): Buffer {
  return Buffer.concat(specs.map((s) => buildFrame(s, masked)))
}

export function closePayload (code: number, reason: string | Buffer = ''): Buffer {
  const r = typeof reason === 'string' ? Buffer.from(reason) : reason
  const b = Buffer.alloc(2 + r.length)
  b.writeUInt16BE(code, 0)
  r.copy(b, 2)
  return b
}

export type Event =
  | ['message', string, boolean]
  | ['ping', string]
  | ['pong', string]
  | ['close', number, string]
  | ['error', number, string]

/** Describe a payload compactly: short ones in hex, long ones by length and a checksum. */
export function describe (data: Buffer): string {
  if (data.length <= 64) return data.toString('hex')
  let sum = 0
  for (let i = 0; i < data.length; i++) sum = (Math.imul(sum, 31) + data[i]!) >>> 0
  return `${data.length}:${sum.toString(16)}`
}

export class RecordingHost implements ReceiverHost {
  events: Event[] = []
  onMessage (data: Buffer, isBinary: boolean): void { this.events.push(['message', describe(data), isBinary]) }
  onPing (data: Buffer): void { this.events.push(['ping', describe(data)]) }
  onPong (data: Buffer): void { this.events.push(['pong', describe(data)]) }
  onCloseFrame (code: number, reason: string): void { this.events.push(['close', code, reason]) }
  onProtocolError (closeCode: number, code: string): void { this.events.push(['error', closeCode, code]) }
}

/** Resolve with the first of `promise` or a rejection after `ms`. */
export function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export function delay (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export interface ParsedFrame {
  fin: boolean
  rsv: number
  opcode: number
  masked: boolean
  payload: Buffer
}

/** Parse complete frames off the front of `buf`; returns them and the unparsed rest. */
export function parseFrames (buf: Buffer): { frames: ParsedFrame[], rest: Buffer } {
  const frames: ParsedFrame[] = []
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
    if (key !== null) for (let i = 0; i < len; i++) payload[i] ^= key[i % 4]!
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, masked, payload })
    off = p + len
  }
  return { frames, rest: buf.subarray(off) }
}

/** A raw TCP WebSocket client: handshake by hand, then frames in and out, and TCP events observable. */
export class RawClient {
  readonly socket: Socket
  private buffer = Buffer.alloc(0)
  readonly frames: ParsedFrame[] = []
  ended = false
  closed = false
  private waiters: Array<() => void> = []

  private constructor (socket: Socket) {
    this.socket = socket
    socket.on('end', () => { this.ended = true; this.wake() })
    socket.on('close', () => { this.closed = true; this.wake() })
    socket.on('error', () => {})
  }

  private wake (): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  private onData (chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk])
    const { frames, rest } = parseFrames(this.buffer)
    this.buffer = Buffer.from(rest)
    this.frames.push(...frames)
    this.wake()
  }

  /** Wait until `cond` holds (checked on every socket event), bounded by `ms`. */
  waitFor (cond: () => boolean, ms: number, what: string): Promise<void> {
    return within(new Promise<void>((resolve) => {
      const check = (): void => {
        if (cond()) resolve()
        else this.waiters.push(check)
      }
      check()
    }), ms, what)
  }

  /** Wait for the next frame of `opcode` not yet consumed. */
  async nextFrame (opcode: number, ms = 2000): Promise<ParsedFrame> {
    let found: ParsedFrame | undefined
    await this.waitFor(() => {
      const i = this.frames.findIndex((f) => f.opcode === opcode)
      if (i === -1) return false
      found = this.frames.splice(i, 1)[0]
      return true
    }, ms, `a frame with opcode ${opcode}`)
    return found!
  }

  write (specs: FrameSpec | FrameSpec[]): void {
    this.socket.write(buildFrames(Array.isArray(specs) ? specs : [specs], true))
  }

  /** Connect and handshake; `extra` bytes are sent in the same write as the request (they arrive as the upgrade head). */
  static connect (port: number, path: string, ms = 2000, extra?: Buffer): Promise<RawClient> {
    return within(new Promise<RawClient>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port })
      let head = Buffer.alloc(0)
      const key = randomBytes(16).toString('base64')
      socket.once('error', reject)
      socket.on('connect', () => {
        const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`)
        socket.write(extra === undefined ? request : Buffer.concat([request, extra]))
      })
      const onData = (chunk: Buffer): void => {
        head = Buffer.concat([head, chunk])
        const end = head.indexOf('\r\n\r\n')
        if (end === -1) return
        socket.removeListener('data', onData)
        socket.removeListener('error', reject)
        const status = head.subarray(0, end).toString('latin1').split('\r\n')[0]!
        if (!/^HTTP\/1\.1 101 /.test(status)) {
          socket.destroy()
          reject(new Error(`handshake refused: ${status}`))
          return
        }
        const client = new RawClient(socket)
        socket.on('data', (c: Buffer) => client.onData(c))
        const rest = head.subarray(end + 4)
        if (rest.length > 0) client.onData(rest)
        resolve(client)
      }
      socket.on('data', onData)
    }), ms, 'the raw handshake')
  }
}

export interface LogLine { level: number, msg: string, err?: { code?: string, message?: string } }

export interface TestServer {
  app: FastifyInstance
  port: number
  /** Server sockets, in the order the handler received them. */
  sockets: WebSocket[]
  /** Resolves with the n-th server socket (0-based) once the handler got it. */
  socket (n?: number): Promise<WebSocket>
  logs: LogLine[]
  close (): Promise<void>
}

/**
 * A Fastify app with the plugin on 127.0.0.1, a free port, ports: 'any', logs captured (warn and above).
 * `handler` runs for every connection on /ws (after the socket is recorded).
 */
export async function startServer (
  options: WebSocketPluginOptions, handler: (socket: WebSocket) => void | Promise<unknown> = () => {}, listen = true
): Promise<TestServer> {
  const logs: LogLine[] = []
  const app = Fastify({
    logger: { level: 'warn', stream: { write (line: string) { logs.push(JSON.parse(line) as LogLine) } } }
  })
  await app.register(fastifyWebSocket, { ports: 'any', ...options })
  const sockets: WebSocket[] = []
  const waiting: Array<() => void> = []
  app.get('/ws', { websocket: true }, (socket) => {
    sockets.push(socket)
    for (const w of waiting.splice(0)) w()
    return handler(socket)
  })
  let port = 0
  if (listen) {
    await app.listen({ host: '127.0.0.1', port: 0 })
    port = (app.server.address() as AddressInfo).port
  } else {
    await app.ready()
  }
  const socket = (n = 0): Promise<WebSocket> => within(new Promise<WebSocket>((resolve) => {
    const check = (): void => {
      if (sockets.length > n) resolve(sockets[n]!)
      else waiting.push(check)
    }
    check()
  }), 2000, `server socket ${n}`)
  const close = async (): Promise<void> => {
    for (const s of sockets) s.terminate()
    await within(app.close(), 5000, 'app.close()')
  }
  return { app, port, sockets, socket, logs, close }
}

/** Resolve with the arguments of the next `event` from `emitter`, bounded by `ms`. */
export function once<A extends unknown[] = unknown[]> (emitter: NodeEventEmitter, event: string, ms = 2000): Promise<A> {
  return within(new Promise<A>((resolve) => {
    emitter.once(event, (...args: unknown[]) => resolve(args as A))
  }), ms, `'${event}'`)
}

interface NodeEventEmitter { once (event: string, listener: (...args: unknown[]) => void): unknown }
