/** The option checks brokers share (each broker validates its options once, in its constructor). */
import { FST_WS_INVALID_BROKER_OPTION } from '../errors.js'
import type { HistoryLimits } from './history.js'

export function checkHistoryLimits (value: unknown, defaults: HistoryLimits): HistoryLimits {
  if (value === undefined) return { ...defaults }
  if (typeof value !== 'object' || value === null) throw new FST_WS_INVALID_BROKER_OPTION('history', 'expected { size?, ttl? }')
  const o = value as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (key !== 'size' && key !== 'ttl') throw new FST_WS_INVALID_BROKER_OPTION('history.' + key, 'unknown option')
  }
  return {
    size: count(o.size, 'history.size', defaults.size, true),
    ttl: count(o.ttl, 'history.ttl', defaults.ttl, false)
  }
}

/** A non-negative (or positive) safe integer, or the default when undefined. */
export function count (value: unknown, name: string, fallback: number, zeroAllowed: boolean): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < (zeroAllowed ? 0 : 1)) {
    throw new FST_WS_INVALID_BROKER_OPTION(name, `expected an integer ≥ ${zeroAllowed ? 0 : 1}, got ${String(value)}`)
  }
  return value
}
