/**
 * How the engine reports a failed connection: a catalogue error object carrying the RFC 6455 close code it
 * caused, built where the failure is detected and passed along as is.
 */
import type { WebSocketError } from '../errors.js'

/** An error emitted on a socket: a catalogue error that carries the close code it caused. */
export type ClosingError = WebSocketError & { closeCode: number }

export function closingError (err: Error, closeCode: number): ClosingError {
  return Object.assign(err, { closeCode }) as ClosingError
}
