/**
 * A FIFO concurrency limiter for zlib jobs.
 *
 * node:zlib runs compression on the libuv thread pool (4 threads by default). If every socket could start a
 * zlib job whenever it liked, a burst of large messages on many sockets would queue unbounded work (and the
 * memory that goes with it) behind that pool, starving fs/dns work too. All permessage-deflate jobs of the
 * process therefore pass through one limiter per concurrency value: at most `concurrency` jobs run, the rest
 * wait in arrival order.
 */

/** A job receives `done`, which it must call exactly once when it no longer occupies a slot. */
export type LimiterJob = (done: () => void) => void

export class Limiter {
  readonly concurrency: number
  #running = 0
  // Array used as a queue with a moving head: O(1) amortised shift without Array#shift's copying.
  #queue: Array<LimiterJob | undefined> = []
  #head = 0
  #draining = false

  constructor (concurrency: number) {
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`Limiter concurrency must be a positive integer, got ${String(concurrency)}`)
    }
    this.concurrency = concurrency
  }

  /** Jobs currently holding a slot. */
  get running (): number {
    return this.#running
  }

  /** Jobs waiting for a slot. */
  get pending (): number {
    return this.#queue.length - this.#head
  }

  add (job: LimiterJob): void {
    this.#queue.push(job)
    this.#drain()
  }

  #drain (): void {
    // A job may call done() synchronously, which re-enters here; the flag turns that recursion into
    // iterations of the loop below, so thousands of jobs that finish at once cannot overflow the stack.
    if (this.#draining) return
    this.#draining = true
    let failure: { err: unknown } | undefined
    try {
      while (this.#running < this.concurrency && this.#head < this.#queue.length) {
        const job = this.#queue[this.#head] as LimiterJob
        this.#queue[this.#head] = undefined
        this.#head++
        if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
          this.#queue = this.#queue.slice(this.#head)
          this.#head = 0
        }
        this.#running++
        let called = false
        const done = (): void => {
          if (called) return
          called = true
          this.#running--
          this.#drain()
        }
        try {
          job(done)
        } catch (err) {
          // A throwing job must not leak its slot nor stall the jobs behind it: free the slot, keep
          // draining, and rethrow the first error to the caller of add()/done() afterwards.
          failure ??= { err }
          done()
        }
      }
    } finally {
      this.#draining = false
    }
    if (failure !== undefined) throw failure.err
  }
}

const limiters = new Map<number, Limiter>()

/** The process-wide limiter for this concurrency value (created on first use). */
export function getLimiter (concurrency: number): Limiter {
  let limiter = limiters.get(concurrency)
  if (limiter === undefined) {
    limiter = new Limiter(concurrency)
    limiters.set(concurrency, limiter)
  }
  return limiter
}
