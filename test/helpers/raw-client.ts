// Raw TCP clients: handshake requests written by hand, one HTTP request read to its end (rawHttp), and one
// WebSocket client (RawWs) that sends masked frames and parses what the server sends back.
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Test } from 'tap'
import { frame, frames, closeFrame, parseFrames, type FrameSpec, type ParsedFrame } from './frames.js'
import { within } from './wait.js'

/** Header overrides: a value replaces the default (names match case-insensitively), null removes it, an array repeats the line. */
export type HeaderOverrides = Record<string, string | string[] | null>

export function newKey (): string {
  return randomBytes(16).toString('base64')
}

/** A client handshake request as raw text; `requestLine` replaces `GET <path> HTTP/1.1`. */
export function handshake (path: string, port: number, headers: HeaderOverrides = {}, requestLine?: string): string {
  const merged: HeaderOverrides = {
    Host: `127.0.0.1:${port}`,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': newKey(),
    'Sec-WebSocket-Version': '13'
  }
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

export interface ResponseHead {
  status: number
  statusLine: string
  /** Lower-case names; repeated headers joined with ', '. */
  headers: Record<string, string>
  /** Offset of the first byte after the head. */
  bodyStart: number
}

/** Parse a raw HTTP response head; null until it is complete. */
export function parseHead (raw: string): ResponseHead | null {
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

export interface RawResponse {
  /** 0 when the connection closed without a complete head (only with tolerateReset). */
  status: number
  statusLine: string
  /** Lower-case header names; repeated headers joined with ', '. */
  headers: Record<string, string>
  body: string
  /** Everything received, as latin1. */
  raw: string
  /** The connection failed (ECONNRESET, EPIPE) instead of ending cleanly (only with tolerateReset). */
  reset: boolean
}

export interface RawHttpOptions {
  /** Deadline for the whole exchange (default 3000 ms). */
  ms?: number
  /**
   * Resolve with what arrived when the connection fails or closes without a complete head (status 0), recording
   * `reset`. Default false: a socket error or a close without a complete response rejects.
   */
  tolerateReset?: boolean
}

/**
 * Write `request` on a fresh connection and read until the server closes it; a 101 resolves as soon as its head
 * arrived (the socket is then destroyed). Rejects if the server has not closed within the deadline (a server that
 * leaves a refused socket open fails the test). The socket is destroyed whatever the outcome.
 */
export function rawHttp (port: number, request: string | Buffer, opts: RawHttpOptions = {}): Promise<RawResponse> {
  const socket = connect({ host: '127.0.0.1', port })
  return within(new Promise<RawResponse>((resolve, reject) => {
    const chunks: Buffer[] = []
    let reset = false
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      const raw = Buffer.concat(chunks).toString('latin1')
      const head = parseHead(raw)
      socket.destroy()
      if (opts.tolerateReset !== true && head === null) {
        reject(new Error(`connection closed without a complete response: ${JSON.stringify(raw)}`))
      } else if (head === null) {
        resolve({ status: 0, statusLine: '', headers: {}, body: '', raw, reset })
      } else {
        resolve({ status: head.status, statusLine: head.statusLine, headers: head.headers, body: raw.slice(head.bodyStart), raw, reset })
      }
    }
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      const head = parseHead(Buffer.concat(chunks).toString('latin1'))
      if (head !== null && head.status === 101) finish()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (opts.tolerateReset !== true) {
        done = true
        socket.destroy()
        reject(err)
      } else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
        reset = true
      }
    })
    socket.on('close', finish)
    // Let the server end the connection: we half-close only once it did.
    socket.on('end', () => socket.end())
    socket.write(request)
  }), opts.ms ?? 3000, 'a raw HTTP response and the end of the connection').catch((err: unknown) => {
    socket.destroy()
    throw err
  })
}

export interface RawWsOptions {
  /** Overrides of the generated handshake's headers. */
  headers?: HeaderOverrides
  /** Send exactly this request instead of the generated handshake. */
  request?: string | Buffer
  /** Bytes sent in the same write as the request (they reach the server with the upgrade). */
  head?: Buffer
  /** Answer nothing by itself: answerClose and answerPing default to false. */
  passive?: boolean
  /** Answer the server's Close with a Close (default true unless passive). */
  answerClose?: boolean
  /** Answer pings with pongs (default true unless passive). */
  answerPing?: boolean
  /** Keep received frames in `frames` (default true; false for load tests that only count 'message' events). */
  keepMessages?: boolean
  /** Deadline for the handshake (default 5000 ms). */
  ms?: number
}

const isData = (f: ParsedFrame): boolean => f.opcode < 0x8

/**
 * A WebSocket client on a raw TCP socket. Received frames wait in `frames` until nextFrame() or nextMessage() takes
 * them. Emits 'message' (payload, opcode) for data frames, 'ping' (payload), 'closeframe' (code, reason) and 'close'
 * once TCP is gone. Socket errors after the handshake are recorded (`reset`), never thrown.
 */
export class RawWs extends EventEmitter {
  readonly socket: Socket
  status = 0
  statusLine = ''
  /** Lower-case names. */
  responseHeaders: Record<string, string> = {}
  /** Received frames not yet taken. */
  readonly frames: ParsedFrame[] = []
  /** The code and reason of the server's Close frame, once received (1005: no code). */
  closeCode: number | null = null
  closeReason = ''
  /** The server ended its side of TCP. */
  ended = false
  tcpClosed = false
  /** The server reset the connection. */
  reset = false
  private buffer: Buffer = Buffer.alloc(0)
  private readonly answerClose: boolean
  private readonly answerPing: boolean
  private readonly keep: boolean
  private sentClose = false
  private waiters: Array<() => void> = []

  private constructor (socket: Socket, opts: RawWsOptions) {
    super()
    this.socket = socket
    this.answerClose = opts.answerClose ?? opts.passive !== true
    this.answerPing = opts.answerPing ?? opts.passive !== true
    this.keep = opts.keepMessages !== false
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') this.reset = true
    })
    socket.on('end', () => {
      this.ended = true
      this.wake()
    })
    socket.on('close', () => {
      this.tcpClosed = true
      this.wake()
      this.emit('close')
    })
  }

  /** Connect and complete the handshake; rejects unless the server answers 101 (the error carries `status`). */
  static connect (port: number, path: string, opts: RawWsOptions = {}): Promise<RawWs> {
    const socket = connect({ host: '127.0.0.1', port })
    const ws = new RawWs(socket, opts)
    return within(new Promise<RawWs>((resolve, reject) => {
      let head: Buffer = Buffer.alloc(0)
      const onData = (c: Buffer): void => {
        head = head.length === 0 ? c : Buffer.concat([head, c])
        const end = head.indexOf('\r\n\r\n')
        if (end === -1) return
        socket.removeListener('data', onData)
        socket.removeListener('error', onError)
        socket.removeListener('close', onClose)
        const parsed = parseHead(head.subarray(0, end + 4).toString('latin1'))!
        ws.status = parsed.status
        ws.statusLine = parsed.statusLine
        ws.responseHeaders = parsed.headers
        if (parsed.status !== 101) {
          socket.destroy()
          reject(Object.assign(new Error(`handshake refused: ${parsed.statusLine}`), { status: parsed.status }))
          return
        }
        ws.attach(head.subarray(end + 4))
        resolve(ws)
      }
      const onError = (err: Error): void => reject(err)
      const onClose = (): void => reject(new Error('closed before the handshake response'))
      socket.on('data', onData)
      socket.once('error', onError)
      socket.once('close', onClose)
      const request = opts.request ?? handshake(path, port, opts.headers)
      const bytes = typeof request === 'string' ? Buffer.from(request) : request
      socket.write(opts.head === undefined ? bytes : Buffer.concat([bytes, opts.head]))
    }), opts.ms ?? 5000, 'the WebSocket handshake').catch((err: unknown) => {
      socket.destroy()
      throw err
    })
  }

  /** A client on a socket whose handshake the test did itself; `rest` holds the bytes received after the 101 head. */
  static over (socket: Socket, rest: Buffer = Buffer.alloc(0), opts: RawWsOptions = {}): RawWs {
    const ws = new RawWs(socket, opts)
    ws.status = 101
    ws.attach(rest)
    socket.resume()
    return ws
  }

  private attach (rest: Buffer): void {
    this.socket.on('data', (c: Buffer) => this.onData(c))
    if (rest.length > 0) this.onData(rest)
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  private onData (chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    const { frames: parsed, rest } = parseFrames(this.buffer)
    if (parsed.length === 0) return
    this.buffer = rest.length === 0 ? Buffer.alloc(0) : Buffer.from(rest)
    for (const f of parsed) this.onFrame(f)
    this.wake()
  }

  private onFrame (f: ParsedFrame): void {
    if (this.keep) this.frames.push(f)
    if (f.opcode === 0x8) {
      this.closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005
      this.closeReason = f.payload.length > 2 ? f.payload.subarray(2).toString() : ''
      if (this.answerClose && !this.sentClose && !this.socket.destroyed) {
        this.sentClose = true
        this.socket.write(this.closeCode === 1005 ? closeFrame() : closeFrame(this.closeCode))
      }
      this.emit('closeframe', this.closeCode, this.closeReason)
    } else if (f.opcode === 0x9) {
      if (this.answerPing && !this.socket.destroyed) this.socket.write(frame(0xa, f.payload))
      this.emit('ping', f.payload)
    } else if (isData(f)) {
      this.emit('message', f.payload, f.opcode)
    }
  }

  /** The data frames among `frames`. */
  get messages (): ParsedFrame[] {
    return this.frames.filter(isData)
  }

  /** Take the first received frame with this opcode (any opcode if none given); rejects after `ms` or once TCP ended without one. */
  nextFrame (opcode?: number, ms = 3000): Promise<ParsedFrame> {
    return this.take((f) => opcode === undefined || f.opcode === opcode, ms, opcode === undefined ? 'the next frame' : `a frame with opcode ${opcode}`)
  }

  /** Take the first received data frame. */
  nextMessage (ms = 3000): Promise<ParsedFrame> {
    return this.take(isData, ms, 'the next message')
  }

  private take (match: (f: ParsedFrame) => boolean, ms: number, what: string): Promise<ParsedFrame> {
    return within(new Promise<ParsedFrame>((resolve, reject) => {
      const attempt = (): void => {
        const i = this.frames.findIndex(match)
        if (i !== -1) resolve(this.frames.splice(i, 1)[0]!)
        else if (this.ended || this.tcpClosed) reject(new Error(`the connection ended before ${what}`))
        else this.waiters.push(attempt)
      }
      attempt()
    }), ms, what)
  }

  /** Send one masked message. Returns socket.write's answer. */
  send (data: Buffer | string, opcode = typeof data === 'string' ? 0x1 : 0x2): boolean {
    return this.socket.write(frame(opcode, data))
  }

  /** Write raw bytes, or frames encoded from specs (masked unless a spec says otherwise). */
  write (data: Buffer | FrameSpec | FrameSpec[]): boolean {
    if (Buffer.isBuffer(data)) return this.socket.write(data)
    return this.socket.write(frames(Array.isArray(data) ? data : [data]))
  }

  /** Send a Close frame (once). */
  close (code = 1000, reason = ''): void {
    if (this.sentClose || this.socket.destroyed) return
    this.sentClose = true
    this.socket.write(closeFrame(code, reason))
  }

  /** Resolves once TCP closed; rejects after `ms`. */
  closed (ms = 5000): Promise<void> {
    if (this.tcpClosed) return Promise.resolve()
    return within(new Promise<void>((resolve) => this.once('close', () => resolve())), ms, 'TCP close')
  }

  destroy (): void {
    this.socket.destroy()
  }
}

/** Open a passive raw WebSocket (it answers nothing by itself) and assert the 101; destroyed at teardown. */
export async function openWs (t: Test, port: number, path: string, headers: HeaderOverrides = {}): Promise<RawWs> {
  const ws = await RawWs.connect(port, path, { headers, passive: true })
  t.teardown(() => ws.destroy())
  t.equal(ws.status, 101, `101 for ${path}`)
  return ws
}
