// A ReceiverHost that records what the parser reports, for the Receiver and Sender unit tests.
import type { ReceiverHost } from '../../lib/protocol/receiver.js'

export type Event =
  | ['message', string, boolean]
  | ['ping', string]
  | ['pong', string]
  | ['close', number, string]
  | ['error', number, string]

/** Describe a payload compactly: short ones in hex, long ones by length and a checksum. */
export function describe (data: Buffer): string {
  if (data.length <= 64) return data.toString('hex')
  let sum = 0
  for (let i = 0; i < data.length; i++) sum = (Math.imul(sum, 31) + data[i]!) >>> 0
  return `${data.length}:${sum.toString(16)}`
}

export class RecordingHost implements ReceiverHost {
  events: Event[] = []
  onMessage (data: Buffer, isBinary: boolean): void { this.events.push(['message', describe(data), isBinary]) }
  onPing (data: Buffer): void { this.events.push(['ping', describe(data)]) }
  onPong (data: Buffer): void { this.events.push(['pong', describe(data)]) }
  onCloseFrame (code: number, reason: string): void { this.events.push(['close', code, reason]) }
  /** Accepts the error object (closeCode, code) or the two values. */
  onProtocolError (err: { closeCode: number, code: string } | number, code?: string): void {
    if (typeof err === 'number') this.events.push(['error', err, code ?? ''])
    else this.events.push(['error', err.closeCode, err.code])
  }

  /** Input waiting behind an inflating message: not an event the tests compare. */
  onBacklog (_bytes: number): void {}
}
