// Deprecated shim: the hostile-input tests' old helper names, mapped onto ./index.js. Import from ./index.js
// instead; this file goes away once no test uses it.
import { rawHttp, type RawResponse } from './raw-client.js'

export { handshake as handshakeText, newKey, RawWs, type RawWsOptions, type RawResponse } from './raw-client.js'
export { delay, within, waitFor } from './wait.js'
export { captureLogs, buildApp, listen, type LogCapture, type LogLine, type TestApp } from './app.js'
export { envInt, guardUnhandled, type UnhandledGuard } from './process.js'
export { gc, settledMemory, memoryNow, PeakSampler, handleCounts, MiB, mib, type MemorySample } from './memory.js'
export { frame, closeFrame, type FrameOptions, type ParsedFrame as ServerFrame } from './frames.js'

export function rawRequest (port: number, request: string | Buffer, ms = 3000): Promise<RawResponse> {
  return rawHttp(port, request, { ms, tolerateReset: true })
}
