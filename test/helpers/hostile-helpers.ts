// Helpers for the hostile-input, fault and load tests: an app builder with captured logs, a raw TCP
// WebSocket client (handshake by hand, masked frames out, server frames parsed), memory probes and
// guards against unhandled errors. Not named *.test.ts, so tap does not run it as a test file.
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { EventEmitter } from 'node:events'
import { delay, within, parseHead, handshake } from './core-helpers.js'

// Shared with the plugin-core tests: one app builder, one log capture, one set of small waits.
/** Handshake request text; `headers` override defaults (null removes one; arrays repeat the header line). */
export const handshakeText = (path: string, port: number, headers: Record<string, string | string[] | null> = {}): string =>
  handshake(path, port, headers)

export { delay, within, captureLogs, buildApp, listen, newKey, type LogCapture, type LogLine, type TestApp } from './core-helpers.js'

/** True when run by scripts/soak.js: tests scale their counts up. */
export const SOAK = process.env.FST_WS_SOAK === '1'

/** A number from the environment (soak overrides), else `fallback`. */
export function envInt (name: string, fallback: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return fallback
  const n = Number(v)
  return Number.isSafeInteger(n) && n > 0 ? n : fallback
}

/** Poll `cond` every `step` ms until it holds; reject after `ms`. */
export async function waitFor (cond: () => boolean, ms: number, what: string, step = 10): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await delay(step)
  }
}

// ---- garbage collection and memory ----
let gcFn: (() => void) | null = null
/** Run a full GC (enabling --expose-gc at run time if needed). */
export function gc (): void {
  if (gcFn === null) {
    const g = (globalThis as { gc?: () => void }).gc
    if (typeof g === 'function') gcFn = g
    else {
      setFlagsFromString('--expose-gc')
      gcFn = runInNewContext('gc') as () => void
    }
  }
  gcFn()
}

export interface MemorySample { rss: number, heapUsed: number, arrayBuffers: number, external: number }

/** GC twice (with a turn of the event loop between), then sample. */
export async function settledMemory (): Promise<MemorySample> {
  gc()
  await delay(20)
  gc()
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, external: m.external }
}

/** Sample without GC: what is held right now. */
export function memoryNow (): MemorySample {
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, external: m.external }
}

export const MiB = 1024 * 1024
export function mib (n: number): string {
  return (n / MiB).toFixed(1) + ' MiB'
}

/** Tracks the peak of a memory metric while a test runs, sampling every `every` ms. */
export class PeakSampler {
  peakRss = 0
  peakArrayBuffers = 0
  peakHeap = 0
  private readonly timer: NodeJS.Timeout
  constructor (every = 5) {
    this.sample()
    this.timer = setInterval(() => this.sample(), every)
  }

  sample (): void {
    const m = process.memoryUsage()
    if (m.rss > this.peakRss) this.peakRss = m.rss
    if (m.arrayBuffers > this.peakArrayBuffers) this.peakArrayBuffers = m.arrayBuffers
    if (m.heapUsed > this.peakHeap) this.peakHeap = m.heapUsed
  }

  stop (): void {
    this.sample()
    clearInterval(this.timer)
  }
}

/** Open libuv handles by type (TCPSocketWrap, Timeout, ...), for before/after comparisons. */
export function handleCounts (): Record<string, number> {
  const out: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1
  return out
}

// ---- unhandled errors ----
export interface UnhandledGuard { errors: unknown[], stop (): void }

/** Collect uncaught exceptions and unhandled rejections while it is installed. */
export function guardUnhandled (): UnhandledGuard {
  const errors: unknown[] = []
  const onError = (err: unknown): void => { errors.push(err) }
  process.on('uncaughtException', onError)
  process.on('unhandledRejection', onError)
  return {
    errors,
    stop () {
      process.removeListener('uncaughtException', onError)
      process.removeListener('unhandledRejection', onError)
    }
  }
}

// ---- app ----
// ---- raw HTTP ----
export interface RawResponse {
  /** 0 when the connection closed without a status line. */
  status: number
  headers: Record<string, string>
  body: string
  raw: string
  /** The server reset the connection (ECONNRESET) instead of ending it. */
  reset: boolean
}

/**
 * Write `request` on a fresh connection and read until the server closes it (or, for a 101, until the head
 * arrived: then the socket is destroyed). Rejects after `ms`.
 */
export function rawRequest (port: number, request: string | Buffer, ms = 3000): Promise<RawResponse> {
  return within(new Promise<RawResponse>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    let reset = false
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      const raw = Buffer.concat(chunks).toString('latin1')
      const head = parseHead(raw)
      socket.destroy()
      if (head === null) resolve({ status: 0, headers: {}, body: '', raw, reset })
      else resolve({ status: head.status, headers: head.headers, body: raw.slice(head.bodyStart), raw, reset })
    }
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      const head = parseHead(Buffer.concat(chunks).toString('latin1'))
      if (head !== null && head.status === 101) finish()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') reset = true
    })
    socket.on('close', finish)
    socket.on('end', () => socket.end())
    socket.write(request)
  }), ms, 'raw HTTP response')
}

// ---- frames ----
export interface FrameOptions { fin?: boolean, rsv1?: boolean, mask?: boolean }

/** One frame as a client sends it (masked unless `mask: false`). */
export function frame (opcode: number, payload: Buffer | string = Buffer.alloc(0), opts: FrameOptions = {}): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const masked = opts.mask !== false
  const len = data.length
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8
  const out = Buffer.allocUnsafe(2 + ext + (masked ? 4 : 0) + len)
  out[0] = (opts.fin === false ? 0 : 0x80) | (opts.rsv1 === true ? 0x40 : 0) | opcode
  out[1] = (masked ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127)
  if (ext === 2) out.writeUInt16BE(len, 2)
  if (ext === 8) out.writeBigUInt64BE(BigInt(len), 2)
  let p = 2 + ext
  if (!masked) {
    data.copy(out, p)
    return out
  }
  const key = randomBytes(4)
  key.copy(out, p)
  p += 4
  for (let i = 0; i < len; i++) out[p + i] = data[i]! ^ key[i & 3]!
  return out
}

export function closeFrame (code?: number, reason = ''): Buffer {
  if (code === undefined) return frame(0x8)
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason))
  payload.writeUInt16BE(code, 0)
  payload.write(reason, 2)
  return frame(0x8, payload)
}

export interface ServerFrame { fin: boolean, rsv1: boolean, opcode: number, payload: Buffer }

export interface RawWsOptions {
  headers?: Record<string, string | string[] | null>
  /** Answer the server's Close with a Close (default true). */
  answerClose?: boolean
  /** Answer pings with pongs (default true). */
  answerPing?: boolean
  /** Keep message payloads (default true; false for load tests that only count). */
  keepMessages?: boolean
  ms?: number
}

/**
 * A WebSocket client on a raw TCP socket. Emits 'message' (payload, opcode) for data frames (unfragmented
 * server messages are all this plugin sends), 'closeframe' (code, reason), and 'close' when TCP is gone.
 */
export class RawWs extends EventEmitter {
  readonly socket: Socket
  status = 0
  responseHeaders: Record<string, string> = {}
  messages: ServerFrame[] = []
  /** The server's Close frame, once received. */
  closeCode: number | null = null
  closeReason = ''
  tcpClosed = false
  /** The server reset the connection. */
  reset = false
  private buffer: Buffer = Buffer.alloc(0)
  private readonly opts: RawWsOptions
  private sentClose = false

  private constructor (socket: Socket, opts: RawWsOptions) {
    super()
    this.socket = socket
    this.opts = opts
  }

  /** Connect and complete the handshake; rejects unless the server answers 101. */
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
        const parsed = parseHead(head.subarray(0, end + 4).toString('latin1'))!
        ws.status = parsed.status
        ws.responseHeaders = parsed.headers
        if (parsed.status !== 101) {
          socket.destroy()
          reject(Object.assign(new Error(`handshake refused with ${parsed.status}`), { status: parsed.status }))
          return
        }
        ws.attach(head.subarray(end + 4))
        resolve(ws)
      }
      socket.on('data', onData)
      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNRESET' || err.code === 'EPIPE') ws.reset = true
        if (ws.status === 0) reject(err)
      })
      socket.on('close', () => {
        ws.tcpClosed = true
        if (ws.status === 0) reject(new Error('closed before the handshake response'))
        ws.emit('close')
      })
      socket.write(handshakeText(path, port, opts.headers))
    }), opts.ms ?? 5000, 'WebSocket handshake')
  }

  private attach (rest: Buffer): void {
    this.socket.on('data', (c: Buffer) => this.onData(c))
    if (rest.length > 0) this.onData(rest)
  }

  private onData (chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    let off = 0
    const b = this.buffer
    while (b.length - off >= 2) {
      const b0 = b[off]!
      let len = b[off + 1]! & 0x7f
      let p = off + 2
      if (len === 126) {
        if (b.length - p < 2) break
        len = b.readUInt16BE(p)
        p += 2
      } else if (len === 127) {
        if (b.length - p < 8) break
        len = Number(b.readBigUInt64BE(p))
        p += 8
      }
      if (b.length - p < len) break
      const f: ServerFrame = { fin: (b0 & 0x80) !== 0, rsv1: (b0 & 0x40) !== 0, opcode: b0 & 0x0f, payload: b.subarray(p, p + len) }
      off = p + len
      this.onFrame(f)
    }
    this.buffer = off === b.length ? Buffer.alloc(0) : Buffer.from(b.subarray(off))
  }

  private onFrame (f: ServerFrame): void {
    if (f.opcode === 0x8) {
      this.closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005
      this.closeReason = f.payload.length > 2 ? f.payload.subarray(2).toString() : ''
      if (this.opts.answerClose !== false && !this.sentClose && !this.socket.destroyed) {
        this.sentClose = true
        this.socket.write(this.closeCode === 1005 ? closeFrame() : closeFrame(this.closeCode))
      }
      this.emit('closeframe', this.closeCode, this.closeReason)
      return
    }
    if (f.opcode === 0x9) {
      if (this.opts.answerPing !== false && !this.socket.destroyed) this.socket.write(frame(0xa, f.payload))
      this.emit('ping', f.payload)
      return
    }
    if (f.opcode === 0xa) return
    if (this.opts.keepMessages !== false) this.messages.push({ ...f, payload: Buffer.from(f.payload) })
    this.emit('message', f.payload, f.opcode)
  }

  /** Send one masked message (or raw bytes). Returns socket.write's answer. */
  send (data: Buffer | string, opcode = typeof data === 'string' ? 0x1 : 0x2): boolean {
    return this.socket.write(frame(opcode, data))
  }

  write (bytes: Buffer): boolean {
    return this.socket.write(bytes)
  }

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

  /** The next data message (payload as text); rejects after `ms` or on close. */
  nextMessage (ms = 3000): Promise<ServerFrame> {
    return within(new Promise<ServerFrame>((resolve, reject) => {
      const onMessage = (): void => {
        this.removeListener('close', onClose)
        resolve(this.messages.shift()!)
      }
      const onClose = (): void => {
        this.removeListener('message', onMessage)
        reject(new Error('closed before a message'))
      }
      if (this.messages.length > 0) {
        resolve(this.messages.shift()!)
        return
      }
      this.once('message', onMessage)
      this.once('close', onClose)
    }), ms, 'next message')
  }

  destroy (): void {
    this.socket.destroy()
  }
}
