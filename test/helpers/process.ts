// The test process: counts scaled up from the environment (scripts/soak.js) and a guard that collects
// uncaught exceptions and unhandled rejections.

/** A positive integer from the environment (soak overrides), else `fallback`. */
export function envInt (name: string, fallback: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return fallback
  const n = Number(v)
  return Number.isSafeInteger(n) && n > 0 ? n : fallback
}

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
