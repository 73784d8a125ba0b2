// Deprecated shim: the plugin-core tests' old helper names, mapped onto ./index.js. Import from ./index.js instead;
// this file goes away once no test uses it.
import { connect, type Socket } from 'node:net'
import type { Test } from 'tap'
import { within } from './wait.js'
import { frame, closeFrame as encodeClose, type ParsedFrame } from './frames.js'
import { RawWs, rawHttp as rawHttpNew, parseHead, openWs as openRaw, type HeaderOverrides, type RawResponse } from './raw-client.js'

export { acceptKey } from '../../lib/http/handshake.js'
export { within, delay } from './wait.js'
export { captureLogs, buildApp, listen, type LogLine, type LogCapture, type TestApp } from './app.js'
export { newKey, handshake, parseHead, type RawResponse } from './raw-client.js'
export { parseClose } from './frames.js'

export type Frame = ParsedFrame
export type TestLike = Test

export function rawHttp (port: number, request: string | Buffer, ms = 3000): Promise<RawResponse> {
  return rawHttpNew(port, request, { ms })
}

export function maskedFrame (opcode: number, payload: Buffer | string, fin = true): Buffer {
  return frame(opcode, payload, { fin })
}

export function closeFrame (code: number, reason = ''): Buffer {
  return encodeClose(code, reason)
}

/** The old reader API over a passive RawWs. */
export class FrameReader {
  private readonly ws: RawWs
  constructor (socket: Socket | RawWs, initial: Buffer = Buffer.alloc(0)) {
    this.ws = socket instanceof RawWs ? socket : RawWs.over(socket, initial, { passive: true })
  }

  get ended (): boolean { return this.ws.ended || this.ws.tcpClosed }

  next (ms = 3000): Promise<ParsedFrame> { return this.ws.nextFrame(undefined, ms) }
}

export interface OpenSocket { socket: Socket, response: RawResponse, rest: Buffer }

/** Write `request`, resolve once a full response head arrived, leaving the connection open and paused. */
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
        response: { status: head.status, statusLine: head.statusLine, headers: head.headers, body: '', raw: raw.slice(0, head.bodyStart), reset: false },
        rest: received.subarray(head.bodyStart)
      })
    }
    socket.on('data', onData)
    socket.on('error', reject)
    socket.write(request)
  }), ms, 'raw handshake response')
}

export function closed (socket: Socket, ms = 3000): Promise<void> {
  if (socket.destroyed && socket.closed) return Promise.resolve()
  return within(new Promise<void>((resolve) => socket.once('close', () => resolve())), ms, 'socket close')
}

export async function openWs (t: Test, port: number, path: string, headers: HeaderOverrides = {}): Promise<{ socket: Socket, reader: FrameReader, response: RawResponse }> {
  const ws = await openRaw(t, port, path, headers)
  const response: RawResponse = { status: ws.status, statusLine: ws.statusLine, headers: ws.responseHeaders, body: '', raw: '', reset: false }
  return { socket: ws.socket, reader: new FrameReader(ws), response }
}
