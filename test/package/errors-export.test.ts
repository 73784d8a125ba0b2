// The `errors` export: error constructors only, and a real class for a refused injectWS() handshake.
import t from 'tap'
import Fastify from 'fastify'
import websocket, { errors, HandshakeRejectedError } from '../../lib/index.js'

t.test('errors exposes only the FST_WS_* catalogue and the handshake-rejected class', async (t) => {
  const keys = Object.keys(errors)
  t.ok(keys.length > 10, 'the catalogue is exported')
  for (const key of keys) {
    t.ok(/^FST_WS_[A-Z0-9_]+$/.test(key) || key === 'HandshakeRejectedError', `${key} is an error code or the class`)
    const value = (errors as Record<string, unknown>)[key]
    t.type(value, 'function', `${key} is a constructor`)
    const ErrorClass = value as new (...args: unknown[]) => Error & { code: string }
    const instance = key === 'HandshakeRejectedError' ? new ErrorClass(403, 'no', {}, '') : new ErrorClass('x', 'y')
    t.ok(instance instanceof Error, `${key} builds an Error`)
    t.equal(instance.code, key === 'HandshakeRejectedError' ? 'FST_WS_HANDSHAKE_REJECTED' : key, `${key} carries its code`)
  }
  t.equal(errors.HandshakeRejectedError, HandshakeRejectedError, 'the class is the same at the top level and in errors')
  // @fastify/error matches instances by code; the class must only claim objects that really have its fields.
  const bare = new errors.FST_WS_HANDSHAKE_REJECTED(403, 'no')
  t.notOk(bare instanceof HandshakeRejectedError, 'a bare catalogue error is not a HandshakeRejectedError')
  t.ok(new HandshakeRejectedError(403, 'no', {}, '') instanceof errors.FST_WS_HANDSHAKE_REJECTED, 'the class extends the catalogue error')
})

t.test('a refused injectWS() rejects with a HandshakeRejectedError holding status, headers and body', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(websocket, { origins: ['https://app.example.com'] })
  app.get('/ws', { websocket: true }, (socket) => { socket.close() })
  await app.ready()

  const err: unknown = await app.injectWS('/ws', { origin: 'https://evil.example' }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof HandshakeRejectedError, 'instanceof the exported class')
  t.ok(err instanceof errors.FST_WS_HANDSHAKE_REJECTED, 'and of the catalogue error it extends')
  if (!(err instanceof HandshakeRejectedError)) return
  t.equal(err.code, 'FST_WS_HANDSHAKE_REJECTED')
  t.equal(err.statusCode, 403)
  t.equal(typeof err.headers['content-type'], 'string', 'response headers, lower-cased names')
  t.match(err.body, /origin/i, 'the response body')
  t.match(err.message, /403/, 'the message names the status')
})
