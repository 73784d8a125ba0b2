// Shared helpers for the plugin-core tests (handshake, routes, origin, ports, subprotocol, lifecycle, interop).
// Not named *.test.ts, so tap does not run it as a test file.
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { ServerOptions } from 'node:http'
import websocket, { type WebSocketPluginOptions } from '../../lib/index.js'
import { acceptKey } from '../../lib/http/handshake.js'

export { acceptKey }

/** Reject if `promise` does not settle within `ms`. */
export function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export function delay (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export type LogLine = Record<string, unknown> & { level: number, msg: string }

/** A pino destination that keeps every log line, parsed. */
export interface LogCapture {
  stream: Writable
  lines: LogLine[]
  /** Lines whose msg contains `text` (and, if given, at this pino level: 30 info, 40 warn, 50 error). */
  find (text: string, level?: number): LogLine[]
}

export function captureLogs (): LogCapture {
  const lines: LogCapture['lines'] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as LogCapture['lines'][number])
      }
      cb()
    }
  })
  return {
    stream,
    lines,
    find (text, level) {
      return lines.filter((l) => typeof l.msg === 'string' && l.msg.includes(text) && (level === undefined || l.level === level))
    }
  }
}

export interface TestApp {
  app: FastifyInstance
  logs: LogCapture
}

/** A Fastify app with the plugin registered and logs captured; `ports: 'any'` unless the options say otherwise. */
export async function buildApp (
  options: WebSocketPluginOptions = {}, fastifyOptions: FastifyServerOptions & { http?: ServerOptions } = {}, level = 'info'
): Promise<TestApp> {
  const logs = captureLogs()
  // `http` is passed to http.createServer (server timeouts in the hostile tests).
  const app = Fastify({ ...fastifyOptions, logger: { level, stream: logs.stream } }) as unknown as FastifyInstance
  await app.register(websocket, { ports: 'any', ...options })
  return { app, logs }
}

/** Listen on 127.0.0.1, an ephemeral port. Returns the port. */
export async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

export function newKey (): string {
  return randomBytes(16).toString('base64')
}

/** A client handshake request as raw text. `headers` override (value null removes a default header). */
export function handshake (path: string, port: number, headers: Record<string, string | string[] | null> = {}, requestLine?: string): string {
  const base: Record<string, string | string[] | null> = {
    Host: `127.0.0.1:${port}`,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': newKey(),
    'Sec-WebSocket-Version': '13'
  }
  const merged: Record<string, string | string[] | null> = { ...base }
  for (const [name, value] of Object.entries(headers)) {
    const existing = Object.keys(merged).find((k) => k.toLowerCase() === name.toLowerCase())
    if (existing !== undefined) delete merged[existing]
    merged[name] = value
  }
  let text = (requestLine ?? `GET ${path} HTTP/1.1`) + '\r\n'
  for (const [name, value] of Object.entries(merged)) {
    if (value === null) continue
    for (const v of Array.isArray(value) ? value : [value]) text += `${name}: ${v}\r\n`
  }
  return text + '\r\n'
}

export interface RawResponse {
  status: number
  statusLine: string
  /** Lower-case header names; repeated headers joined with ', '. */
  headers: Record<string, string>
  body: string
  /** Everything received, as latin1. */
  raw: string
}

/** Parse a raw HTTP response head; null until it is complete. */
export function parseHead (raw: string): { status: number, statusLine: string, headers: Record<string, string>, bodyStart: number } | null {
  const end = raw.indexOf('\r\n\r\n')
  if (end === -1) return null
  const lines = raw.slice(0, end).split('\r\n')
  const statusLine = lines[0] ?? ''
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0)
  const headers: Record<string, string> = {}
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers[name] = headers[name] === undefined ? value : headers[name] + ', ' + value
  }
  return { status, statusLine, headers, bodyStart: end + 4 }
}

/**
 * Write `request` on a fresh TCP connection and read until the server ends the connection.
 * Resolves with the parsed response; rejects if the server does not close within `ms`
 * (a server that leaves a refused socket open fails the test).
 */
export function rawHttp (port: number, request: string | Buffer, ms = 3000): Promise<RawResponse> {
  return within(new Promise<RawResponse>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', reject)
    socket.on('close', () => {
      const raw = Buffer.concat(chunks).toString('latin1')
      const head = parseHead(raw)
      if (head === null) {
        reject(new Error(`connection closed without a complete response: ${JSON.stringify(raw)}`))
        return
      }
      resolve({ status: head.status, statusLine: head.statusLine, headers: head.headers, body: raw.slice(head.bodyStart), raw })
    })
    socket.write(request)
    // Allow the server to end the connection: we half-close only once it did.
    socket.on('end', () => socket.end())
  }), ms, 'raw HTTP response and end of connection')
}

export interface OpenSocket {
  socket: Socket
  response: RawResponse
  /** Bytes received after the response head (frames). */
  rest: Buffer
}

/**
 * Write `request` and resolve as soon as a full response head has arrived, leaving the connection open.
 * The caller closes `socket` (register it with t.teardown).
 */
export function rawUpgrade (port: number, request: string | Buffer, ms = 3000): Promise<OpenSocket> {
  return within(new Promise<OpenSocket>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    let received = Buffer.alloc(0)
    const onData = (c: Buffer): void => {
      received = Buffer.concat([received, c])
      const raw = received.toString('latin1')
      const head = parseHead(raw)
      if (head === null) return
      socket.removeListener('data', onData)
      socket.pause()
      resolve({
        socket,
        response: { status: head.status, statusLine: head.statusLine, headers: head.headers, body: '', raw: raw.slice(0, head.bodyStart) },
        rest: received.subarray(head.bodyStart)
      })
    }
    socket.on('data', onData)
    socket.on('error', reject)
    socket.write(request)
  }), ms, 'raw handshake response')
}

/** A client frame: FIN set, masked with a random key (RFC 6455 §5.3). */
export function maskedFrame (opcode: number, payload: Buffer | string, fin = true): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const mask = randomBytes(4)
  let header: Buffer
  if (data.length < 126) {
    header = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | data.length])
  } else if (data.length < 65536) {
    header = Buffer.alloc(4)
    header[0] = (fin ? 0x80 : 0) | opcode
    header[1] = 0x80 | 126
    header.writeUInt16BE(data.length, 2)
  } else {
    header = Buffer.alloc(10)
    header[0] = (fin ? 0x80 : 0) | opcode
    header[1] = 0x80 | 127
    header.writeBigUInt64BE(BigInt(data.length), 2)
  }
  const masked = Buffer.alloc(data.length)
  for (let i = 0; i < data.length; i++) masked[i] = data[i]! ^ mask[i & 3]!
  return Buffer.concat([header, mask, masked])
}

export function closeFrame (code: number, reason = ''): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason))
  payload.writeUInt16BE(code, 0)
  payload.write(reason, 2)
  return maskedFrame(0x8, payload)
}

export interface Frame {
  fin: boolean
  opcode: number
  masked: boolean
  payload: Buffer
}

/** Read server frames (unmasked) off a raw socket, starting with `initial` bytes. */
export class FrameReader {
  private buffer: Buffer
  private readonly frames: Frame[] = []
  private waiters: Array<() => void> = []
  ended = false

  constructor (socket: Socket, initial: Buffer = Buffer.alloc(0)) {
    this.buffer = initial
    this.parse()
    socket.on('data', (c: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, c])
      this.parse()
    })
    const onEnd = (): void => {
      this.ended = true
      this.wake()
    }
    socket.on('end', onEnd)
    socket.on('close', onEnd)
    socket.resume()
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  private parse (): void {
    for (;;) {
      const b = this.buffer
      if (b.length < 2) return
      let len = b[1]! & 0x7f
      const masked = (b[1]! & 0x80) !== 0
      let offset = 2
      if (len === 126) {
        if (b.length < 4) return
        len = b.readUInt16BE(2)
        offset = 4
      } else if (len === 127) {
        if (b.length < 10) return
        len = Number(b.readBigUInt64BE(2))
        offset = 10
      }
      if (masked) offset += 4
      if (b.length < offset + len) return
      let payload = Buffer.from(b.subarray(offset, offset + len))
      if (masked) {
        const key = b.subarray(offset - 4, offset)
        payload = Buffer.from(payload.map((x, i) => x ^ key[i & 3]!))
      }
      this.frames.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, masked, payload })
      this.buffer = b.subarray(offset + len)
      this.wake()
    }
  }

  /** The next frame; rejects after `ms`, or if the connection ends first. */
  next (ms = 3000): Promise<Frame> {
    return within(new Promise<Frame>((resolve, reject) => {
      const attempt = (): void => {
        const frame = this.frames.shift()
        if (frame !== undefined) resolve(frame)
        else if (this.ended) reject(new Error('connection ended before the next frame'))
        else this.waiters.push(attempt)
      }
      attempt()
    }), ms, 'next frame')
  }
}

/** Close code and reason of a Close frame payload. */
export function parseClose (payload: Buffer): { code: number, reason: string } {
  if (payload.length < 2) return { code: 1005, reason: '' }
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString() }
}

/** Resolves once `socket` emitted 'close' (rejects after `ms`). */
export function closed (socket: Socket, ms = 3000): Promise<void> {
  if (socket.destroyed && socket.closed) return Promise.resolve()
  return within(new Promise<void>((resolve) => socket.once('close', () => resolve())), ms, 'socket close')
}

/** The bits of a tap test the helpers use. */
export interface TestLike {
  teardown (fn: () => unknown): void
  equal (found: unknown, wanted: unknown, message: string): boolean
}

/** Open a raw WebSocket connection and assert the 101; the socket is destroyed at teardown. */
export async function openWs (t: TestLike, port: number, path: string, headers: Record<string, string | string[] | null> = {}) {
  const { socket, response, rest } = await rawUpgrade(port, handshake(path, port, headers))
  t.teardown(() => socket.destroy())
  t.equal(response.status, 101, `101 for ${path}`)
  return { socket, reader: new FrameReader(socket, rest), response }
}
