/**
 * The single catalogue of error codes. Every error the plugin throws or emits
 * has a stable `code` (FST_WS_*); protocol errors also carry the RFC 6455
 * close code they caused.
 */
import createError from '@fastify/error'

/** Misuse of the API at registration: wrong option type or value. */
export const FST_WS_INVALID_OPTION = createError<[string, string]>(
  'FST_WS_INVALID_OPTION', 'Invalid option "%s": %s', 500, TypeError)
/** `close()` with a code that may not be sent (RFC 6455 §7.4). */
export const FST_WS_INVALID_CLOSE_CODE = createError<[unknown]>(
  'FST_WS_INVALID_CLOSE_CODE', 'Invalid close code %s: use 1000, 3000-4999 or 1001-1014 except 1004-1006', 500, RangeError)
/** `close()` with a reason longer than 123 UTF-8 bytes. */
export const FST_WS_REASON_TOO_LONG = createError<[number]>(
  'FST_WS_REASON_TOO_LONG', 'Close reason is %s bytes; at most 123 UTF-8 bytes fit in a close frame', 500, RangeError)
/** `ping()`/`pong()` with a payload over 125 bytes. */
export const FST_WS_CONTROL_TOO_LARGE = createError<[number]>(
  'FST_WS_CONTROL_TOO_LARGE', 'Control frame payload is %s bytes; at most 125 are allowed', 500, RangeError)
/** `send()` with something that is not a string, Buffer, ArrayBuffer or view. */
export const FST_WS_INVALID_DATA = createError<[string]>(
  'FST_WS_INVALID_DATA', 'Cannot send %s: use a string, Buffer, ArrayBuffer or ArrayBufferView', 500, TypeError)
/** `send()`/`ping()` after the socket started closing. */
export const FST_WS_NOT_OPEN = createError<[string]>(
  'FST_WS_NOT_OPEN', 'WebSocket is not open (readyState %s)', 500)
/** Invalid topic name for subscribe/publish. */
export const FST_WS_INVALID_TOPIC = createError<[string]>(
  'FST_WS_INVALID_TOPIC', 'Invalid topic: %s', 500, TypeError)
/** A topic broker was constructed with an invalid option. */
export const FST_WS_INVALID_BROKER_OPTION = createError<[string, string]>(
  'FST_WS_INVALID_BROKER_OPTION', 'Invalid topic broker option "%s": %s', 500, TypeError)
/** A publish was refused because the broker is not connected (the message was not sent). */
export const FST_WS_BROKER_UNAVAILABLE = createError<[string]>(
  'FST_WS_BROKER_UNAVAILABLE', 'Topic broker unavailable: %s', 503)
/** The broker did not confirm a publish in time: the message may or may not have been published. */
export const FST_WS_BROKER_TIMEOUT = createError<[number]>(
  'FST_WS_BROKER_TIMEOUT', 'Topic broker did not answer within %d ms: the message may or may not have been published', 504)
/** request()/onRequest() on a socket that did not negotiate the `fastify-rfc6455.v1` envelope. */
export const FST_WS_NO_ENVELOPE = createError<[string]>(
  'FST_WS_NO_ENVELOPE', '%s needs a socket that speaks the fastify-rfc6455.v1 subprotocol (list it in the route\'s protocols)', 500, TypeError)
/** A request got no reply within its timeout. */
export const FST_WS_REQUEST_TIMEOUT = createError<[number]>(
  'FST_WS_REQUEST_TIMEOUT', 'No reply within %d ms', 504)
/** The peer answered a request with an error code ("invalid", "no-handler", "failed"), or an invalid reply. */
export const FST_WS_REQUEST_FAILED = createError<[string]>(
  'FST_WS_REQUEST_FAILED', 'The request failed: %s', 502)
/** The socket closed before the reply came: the peer may or may not have handled the request. */
export const FST_WS_REQUEST_CLOSED = createError(
  'FST_WS_REQUEST_CLOSED', 'The socket closed before the reply came', 503)
/** A route declares `wsHandler` or `websocket` in a way the plugin cannot serve. */
export const FST_WS_INVALID_ROUTE = createError<[string, string]>(
  'FST_WS_INVALID_ROUTE', 'Invalid WebSocket route %s: %s', 500, TypeError)
/** `injectWS()` handshake refused; `statusCode` is the HTTP status the server answered. */
export const FST_WS_HANDSHAKE_REJECTED = createError<[number, string]>(
  'FST_WS_HANDSHAKE_REJECTED', 'WebSocket handshake rejected with status %s: %s', 500)
/**
 * What `injectWS()` rejects with when the server refuses the handshake: the status, headers and body the server
 * answered. An `FST_WS_HANDSHAKE_REJECTED`, so `instanceof` either narrows; this class types the response fields.
 */
export class HandshakeRejectedError extends FST_WS_HANDSHAKE_REJECTED {
  /** The prototype chain, not @fastify/error's match by code: only objects built by this class have its fields. */
  static override [Symbol.hasInstance] (value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value)
  }

  override readonly code = 'FST_WS_HANDSHAKE_REJECTED'
  /** The HTTP status the server answered instead of 101. */
  override statusCode: number
  /** The response headers, names lower-cased. */
  headers: Record<string, string>
  /** The response body, as text. */
  body: string

  constructor (statusCode: number, message: string, headers: Record<string, string>, body: string) {
    super(statusCode, message)
    this.statusCode = statusCode
    this.headers = headers
    this.body = body
  }
}

/** A topic name over `maxTopicLength`, or a socket already subscribed to `maxTopicsPerSocket` topics. */
export const FST_WS_TOPIC_LIMIT = createError<[string]>(
  'FST_WS_TOPIC_LIMIT', 'Topic limit: %s', 500, RangeError)
/** A route declares `websocket`/`wsHandler` in an encapsulation context where the plugin is not registered. */
export const FST_WS_PLUGIN_MISSING = createError<[string]>(
  'FST_WS_PLUGIN_MISSING', 'WebSocket route %s is registered where fastify-rfc6455 is not: register the plugin in this context or a parent of it, before the route', 500, TypeError)

/** The plugin is registered in a context where an ancestor context already registered it. */
export const FST_WS_ALREADY_REGISTERED = createError(
  'FST_WS_ALREADY_REGISTERED', 'fastify-rfc6455 is already registered in a parent context: register it once, at the top of the tree that holds your WebSocket routes (route options override its options per route)', 500, TypeError)

/** A route's `websocket.messages` schema that its compiler refuses (thrown when the app boots). */
export const FST_WS_INVALID_SCHEMA = createError<[string, string, string]>(
  'FST_WS_INVALID_SCHEMA', 'Invalid WebSocket message schema on route %s (messages.%s): %s', 500, TypeError)
/**
 * `socket.onMessage()` misuse: on a socket whose route has no `messages.receive` schema, with a type that is not a
 * string or a handler that is not a function, or a second handler for the same type.
 */
export const FST_WS_INVALID_HANDLER = createError<[string]>(
  'FST_WS_INVALID_HANDLER', 'Invalid message handler: %s', 500, TypeError)

/* Errors emitted on a socket ('error' event) when the connection fails. */
export const FST_WS_PROTOCOL_ERROR = createError<[string]>(
  'FST_WS_PROTOCOL_ERROR', 'Protocol error: %s', 500)
export const FST_WS_INVALID_UTF8 = createError<[string]>(
  'FST_WS_INVALID_UTF8', 'Invalid UTF-8 in %s', 500)
export const FST_WS_MESSAGE_TOO_BIG = createError<[string]>(
  'FST_WS_MESSAGE_TOO_BIG', 'Message too big: %s', 500, RangeError)
export const FST_WS_SLOW_CONSUMER = createError<[number]>(
  'FST_WS_SLOW_CONSUMER', 'Peer does not read: outbound buffer exceeded maxBufferedAmount (%s bytes)', 500)
export const FST_WS_HEARTBEAT_TIMEOUT = createError<[number]>(
  'FST_WS_HEARTBEAT_TIMEOUT', 'Peer did not answer a ping within %s ms', 500)
/** An inbound message a route with a `receive` schema refused: not JSON, not matching, or binary. */
export const FST_WS_INVALID_MESSAGE = createError<[string]>(
  'FST_WS_INVALID_MESSAGE', 'Invalid message: %s', 400)
export const FST_WS_DEFLATE_ERROR = createError<[string]>(
  'FST_WS_DEFLATE_ERROR', 'permessage-deflate failed: %s', 500)

/** What an `'invalid'` event carries (routes with `messages.onInvalid: 'emit'`). */
export interface InvalidMessageError extends WebSocketError {
  code: 'FST_WS_INVALID_MESSAGE'
  /** Why: a binary frame, text that is not JSON, or JSON that does not match the `receive` schema. */
  reason: 'binary' | 'json' | 'schema'
  /** The compiler's errors for `schema` (ajv's error objects, a Zod error...), the JSON.parse message for `json`. */
  validation: unknown
  /** The message as received. */
  data: Buffer
}

/** What an 'error' event carries: a coded error, with the close code it caused when it closed the socket. */
export interface WebSocketError extends Error {
  code: string
  closeCode?: number
}

