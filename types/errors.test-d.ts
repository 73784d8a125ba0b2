// Type-level tests of the `errors` export and the handshake-rejected error class. Compiled, never run.
import Fastify from 'fastify'
import websocket, { errors, HandshakeRejectedError } from '../lib/index.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function assertEqual<A, B> (_proof: Equal<A, B>): void {}

const app = Fastify()
await app.register(websocket)

try {
  await app.injectWS('/nope')
} catch (err) {
  // instanceof narrows to a class with the refused response on it, without a cast.
  if (err instanceof HandshakeRejectedError) {
    assertEqual<typeof err.statusCode, number>(true)
    assertEqual<typeof err.headers, Record<string, string>>(true)
    assertEqual<typeof err.body, string>(true)
    assertEqual<typeof err.code, 'FST_WS_HANDSHAKE_REJECTED'>(true)
    // @ts-expect-error the headers are read as a record of strings, not a Headers object
    err.headers.get('retry-after')
  }
  if (err instanceof errors.HandshakeRejectedError) {
    assertEqual<typeof err.statusCode, number>(true)
    assertEqual<typeof err.body, string>(true)
  }
  // The catalogue constructor still matches (the class extends it); its instances carry the code.
  if (err instanceof errors.FST_WS_HANDSHAKE_REJECTED) {
    const code: string = err.code
    assertEqual<typeof code, string>(true)
    // @ts-expect-error the catalogue error alone has no body: narrow with HandshakeRejectedError for that
    assertEqual<typeof err.body, string>(true)
  }
}

// `errors` holds error constructors only: every value key is an FST_WS_* code or the one class.
type ErrorKeys = keyof typeof errors
assertEqual<Exclude<ErrorKeys, `FST_WS_${string}` | 'HandshakeRejectedError'>, never>(true)
type NotConstructors = { [K in ErrorKeys]: (typeof errors)[K] extends abstract new (...args: never[]) => Error ? never : K }[ErrorKeys]
assertEqual<NotConstructors, never>(true)
// @ts-expect-error internal helpers are not part of `errors`
errors.describe('x')
