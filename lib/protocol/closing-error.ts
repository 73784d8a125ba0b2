/**
 * How the engine reports a failed connection: a catalogue error object carrying the RFC 6455 close code it
 * caused, built where the failure is detected and passed along as is.
 */
import type { ClosingError } from '../errors.js'

export function closingError (err: Error, closeCode: number): ClosingError {
  return Object.assign(err, { closeCode }) as ClosingError
}
