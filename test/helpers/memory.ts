// Memory and handle probes for the hostile-input, fault and load tests.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { delay } from './wait.js'

export const MiB = 1024 * 1024
export function mib (n: number): string {
  return (n / MiB).toFixed(1) + ' MiB'
}

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

/** Sample without GC: what is held right now. */
export function memoryNow (): MemorySample {
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, external: m.external }
}

/** GC twice (with a turn of the event loop between), then sample. */
export async function settledMemory (): Promise<MemorySample> {
  gc()
  await delay(20)
  gc()
  return memoryNow()
}

/** Tracks the peaks of rss, arrayBuffers and heapUsed while a test runs, sampling every `every` ms. */
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
