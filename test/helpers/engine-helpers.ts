// Deprecated shim: the engine tests' old helper names, mapped onto ./index.js. Import from ./index.js instead;
// this file goes away once no test uses it.
import { frame, frames, FIXED_MASK, type FrameOptions, type ParsedFrame } from './frames.js'
import { RawWs } from './raw-client.js'
import { startServer as start, type TestServer as NewTestServer, type LogLine } from './app.js'
import type { WebSocketPluginOptions } from '../../lib/index.js'
import type { WebSocket } from '../../lib/socket/websocket.js'
import { waitFor } from './wait.js'

export { closePayload, parseFrames, type ParsedFrame } from './frames.js'
export { describe, RecordingHost, type Event } from './receiver-host.js'
export { within, delay, once } from './wait.js'
export type { LogLine } from './app.js'

export interface FrameSpec extends Omit<FrameOptions, 'mask' | 'extendedLength'> {
  opcode: number
  payload?: Buffer | string
  masked?: boolean
  length64?: bigint
}

function options (spec: FrameSpec, masked: boolean): FrameOptions {
  const opts: FrameOptions = { mask: (spec.masked ?? masked) ? FIXED_MASK : false }
  if (spec.fin !== undefined) opts.fin = spec.fin
  if (spec.rsv1 !== undefined) opts.rsv1 = spec.rsv1
  if (spec.rsv2 !== undefined) opts.rsv2 = spec.rsv2
  if (spec.rsv3 !== undefined) opts.rsv3 = spec.rsv3
  if (spec.lengthCode !== undefined) opts.lengthCode = spec.lengthCode
  if (spec.length64 !== undefined) opts.extendedLength = spec.length64
  return opts
}

export function buildFrame (spec: FrameSpec, masked: boolean): Buffer {
  return frame(spec.opcode, spec.payload, options(spec, masked))
}

export function buildFrames (specs: FrameSpec[], masked: boolean): Buffer {
  return frames(specs.map((s) => ({ opcode: s.opcode, payload: s.payload, ...options(s, masked) })))
}

/** The old raw client API over a passive RawWs. */
export class RawClient {
  private constructor (private readonly ws: RawWs) {}
  get socket () { return this.ws.socket }
  get frames (): ParsedFrame[] { return this.ws.frames }
  get ended (): boolean { return this.ws.ended }
  get closed (): boolean { return this.ws.tcpClosed }
  waitFor (cond: () => boolean, ms: number, what: string): Promise<void> { return waitFor(cond, ms, what) }
  nextFrame (opcode: number, ms = 2000): Promise<ParsedFrame> { return this.ws.nextFrame(opcode, ms) }
  write (specs: FrameSpec | FrameSpec[]): void { this.ws.write(buildFrames(Array.isArray(specs) ? specs : [specs], true)) }
  static async connect (port: number, path: string, ms = 2000, extra?: Buffer): Promise<RawClient> {
    return new RawClient(await RawWs.connect(port, path, { passive: true, ms, ...(extra === undefined ? {} : { head: extra }) }))
  }
}

export type TestServer = Omit<NewTestServer, 'logs'> & { logs: LogLine[] }

export async function startServer (
  options: WebSocketPluginOptions, handler: (socket: WebSocket) => void | Promise<unknown> = () => {}, listen = true
): Promise<TestServer> {
  const s = await start(options, handler, listen)
  return { ...s, logs: s.logs.lines }
}
