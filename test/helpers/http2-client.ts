// HTTP/2 test clients for RFC 8441: a self-signed certificate made by the openssl CLI, a session that waits for
// the server's SETTINGS, and a WebSocket over one extended CONNECT stream whose frames are written and parsed by
// test/helpers/frames.ts (not by lib/). Not named *.test.ts: tap does not run it.
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type SecureClientSessionOptions } from 'node:http2'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EventEmitter } from 'node:events'
import { frame, closeFrame, parseClose, parseFrames, type ParsedFrame } from './frames.js'
import { within } from './wait.js'

export interface KeyPair { key: string, cert: string }

let cached: KeyPair | null = null

/** A throwaway self-signed certificate for localhost and 127.0.0.1 (P-256), generated once per test process. */
export function selfSignedCert (): KeyPair {
  if (cached !== null) return cached
  const dir = mkdtempSync(join(tmpdir(), 'rfc8441-'))
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'
    ], { stdio: 'ignore', timeout: 10_000 })
    cached = { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') }
    return cached
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export interface H2Session {
  session: ClientHttp2Session
  /** The server's SETTINGS, as received first. */
  settings: http2.Settings
}

/** Connect and wait for the server's first SETTINGS frame. `url` is http://… (h2c) or https://… (TLS, cert not checked). */
export async function connectH2 (url: string, options: SecureClientSessionOptions = {}): Promise<H2Session> {
  const session = http2.connect(url, { rejectUnauthorized: false, ...options })
  session.on('error', () => {}) // surfaced through 'close' and the streams
  const settings = await within(new Promise<http2.Settings>((resolve, reject) => {
    session.once('remoteSettings', resolve)
    session.once('close', () => reject(new Error('session closed before SETTINGS')))
  }), 5000, 'HTTP/2 SETTINGS')
  return { session, settings }
}

export interface ConnectResult {
  stream: ClientHttp2Stream
  status: number
  headers: IncomingHttpHeaders
}

/** Send an extended CONNECT (or any request `headers` describe) and wait for the response headers. */
export function connectRequest (session: ClientHttp2Session, headers: http2.OutgoingHttpHeaders, ms = 5000): Promise<ConnectResult> {
  const stream = session.request(headers, { endStream: false })
  stream.on('error', () => {})
  return within(new Promise<ConnectResult>((resolve, reject) => {
    stream.once('response', (h) => resolve({ stream, status: Number(h[':status']), headers: h }))
    stream.once('close', () => reject(new Error(`stream closed before a response (RST_STREAM code ${stream.rstCode ?? 'none'})`)))
  }), ms, 'CONNECT response')
}

/** The extended CONNECT headers for a WebSocket on `path` (RFC 8441 §4), plus `extra` (null removes one). */
export function wsConnectHeaders (authority: string, path: string, scheme: 'http' | 'https', extra: Record<string, string | null> = {}): http2.OutgoingHttpHeaders {
  const headers: Record<string, string> = {
    ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': scheme, ':path': path, ':authority': authority,
    'sec-websocket-version': '13'
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === null) delete headers[k]
    else headers[k] = v
  }
  return headers
}

/**
 * A WebSocket client over one HTTP/2 stream. Received frames wait in `frames`; a server Close is answered (unless
 * `answerClose` is false) and then the stream is ended, as the client side of RFC 6455 §7 over RFC 8441.
 */
export class H2Ws extends EventEmitter {
  readonly stream: ClientHttp2Stream
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly frames: ParsedFrame[] = []
  closeCode: number | null = null
  closeReason = ''
  ended = false
  closed = false
  answerClose = true
  private buffer: Buffer = Buffer.alloc(0)
  private sentClose = false

  constructor (result: ConnectResult) {
    super()
    this.stream = result.stream
    this.status = result.status
    this.headers = result.headers
    this.stream.on('data', (chunk: Buffer) => this.onData(chunk))
    this.stream.on('end', () => {
      this.ended = true
      this.emit('wake')
    })
    this.stream.on('close', () => {
      this.closed = true
      this.emit('wake')
    })
  }

  private onData (chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    const { frames, rest } = parseFrames(this.buffer)
    this.buffer = rest
    for (const f of frames) {
      if (f.opcode === 0x8) {
        const { code, reason } = parseClose(f.payload)
        this.closeCode = code
        this.closeReason = reason
        if (this.answerClose && !this.stream.writableEnded) {
          // Echo the Close unless ours went first, then end our side: the stream closes once both sides ended.
          if (this.sentClose) this.stream.end()
          else this.stream.end(closeFrame(code === 1005 ? undefined : code))
          this.sentClose = true
        }
      } else if (f.opcode === 0x9) {
        if (!this.stream.writableEnded) this.stream.write(frame(0xA, f.payload))
      }
      this.frames.push(f)
      this.emit('frame', f)
    }
    this.emit('wake')
  }

  send (data: string | Buffer): boolean {
    return this.stream.write(frame(typeof data === 'string' ? 0x1 : 0x2, data))
  }

  /** Send our Close (and end our side of the stream once the server's Close arrives, or now with `end`). */
  close (code = 1000, reason = '', end = false): void {
    this.sentClose = true
    if (end) this.stream.end(closeFrame(code, reason))
    else this.stream.write(closeFrame(code, reason))
  }

  async until (check: () => boolean, what: string, ms = 5000): Promise<void> {
    if (check()) return
    await within(new Promise<void>((resolve) => {
      const wake = (): void => {
        if (check() || this.closed) {
          this.removeListener('wake', wake)
          resolve()
        }
      }
      this.on('wake', wake)
    }), ms, what)
    if (!check()) throw new Error(`${what}: the stream closed first`)
  }

  /** The next data frame (text or binary), taken off `frames`. */
  async nextMessage (ms = 5000): Promise<ParsedFrame> {
    const find = (): number => this.frames.findIndex((f) => f.opcode === 0x1 || f.opcode === 0x2)
    await this.until(() => find() !== -1, 'next message', ms)
    return this.frames.splice(find(), 1)[0]!
  }

  /** Wait until the stream is closed (both sides ended, or reset). */
  async waitClosed (ms = 5000): Promise<void> {
    await this.until(() => this.closed, 'stream close', ms)
  }
}

/** Open a WebSocket on `path` over `session`; throws when the answer is not 200. */
export async function openH2Ws (
  session: ClientHttp2Session, authority: string, path: string, scheme: 'http' | 'https', extra: Record<string, string | null> = {}
): Promise<H2Ws> {
  const result = await connectRequest(session, wsConnectHeaders(authority, path, scheme, extra))
  if (result.status !== 200) {
    result.stream.close()
    throw new Error(`CONNECT answered ${result.status}`)
  }
  return new H2Ws(result)
}
