// Bounded waits: every wait in a test has a deadline, so a hang fails the test instead of stalling the run.

/** Settle like `promise`, or reject once `ms` have passed. */
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

/** Check `cond` now and every `step` ms until it holds (it may be async); reject after `ms`. */
export async function waitFor (cond: () => boolean | Promise<boolean>, ms: number, what: string, step = 10): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await delay(step)
  }
}

interface Emitter { once (event: string, listener: (...args: unknown[]) => void): unknown }

/** The arguments of the next `event` from `emitter`; rejects after `ms`. */
export function once<A extends unknown[] = unknown[]> (emitter: Emitter, event: string, ms = 2000): Promise<A> {
  return within(new Promise<A>((resolve) => {
    emitter.once(event, (...args: unknown[]) => resolve(args as A))
  }), ms, `'${event}'`)
}
