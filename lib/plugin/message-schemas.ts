/**
 * Route-level message schemas (`websocket.messages`): what a route receives and what it sends, compiled once with
 * the Fastify instance's own validator and serializer compilers, so whatever the app uses for request bodies
 * (ajv for JSON Schema and TypeBox, a Zod type provider's compilers, a route's own `validatorCompiler`) serves
 * messages too.
 *
 * Compiled when the app boots (onReady of the route's instance): a schema the compiler refuses fails
 * `app.ready()` with FST_WS_INVALID_SCHEMA naming the route. Fastify sets its default compilers up lazily (on the
 * first route with a schema); when none is set up yet, the same default compilers Fastify would build (ajv through
 * @fastify/ajv-compiler, fast-json-stringify through @fastify/fast-json-stringify-compiler) are built here from the
 * instance's shared schemas and its `ajv` server option.
 */
import type { FastifyInstance } from 'fastify'
import AjvCompiler from '@fastify/ajv-compiler'
import SerializerCompiler from '@fastify/fast-json-stringify-compiler'
import { FST_WS_INVALID_SCHEMA } from '../errors.js'
import { fastifyServerOption } from './fastify-options.js'

/** What to do with an inbound message that is not valid JSON or does not match the `receive` schema. */
export type InvalidMessagePolicy = 'close' | 'emit'

export interface MessagesOption {
  /** Schema of the messages the route receives (JSON in text frames). */
  receive?: unknown
  /** Schema of the messages the route sends with `socket.sendMessage()`. */
  send?: unknown
  /** `'close'` (default): close with 1007 (1003 for a binary frame); `'emit'`: keep the socket open and emit `'invalid'`. */
  onInvalid?: InvalidMessagePolicy
}

/** A compiled validator, in the shapes Fastify's compilers return: ajv's boolean function, or `{ value, error }`. */
type Validate = ((data: unknown) => unknown) & { errors?: unknown }
type Serialize = (data: unknown) => string

/** The result of decoding one inbound message: the (possibly coerced) value, or why it was refused. */
export type Decoded = { ok: true, value: unknown } | { ok: false, reason: 'binary' | 'json' | 'schema', errors: unknown }

/** The compiled codec of one route, shared by its sockets. */
export class MessageCodec {
  readonly onInvalid: InvalidMessagePolicy
  #validate: Validate | null = null
  #serialize: Serialize | null = null
  readonly #options: MessagesOption

  constructor (options: MessagesOption) {
    this.#options = options
    this.onInvalid = options.onInvalid ?? 'close'
  }

  /** Whether the route declared a `receive` schema (then inbound text is parsed and validated). */
  get validates (): boolean {
    return this.#options.receive !== undefined
  }

  /** Compile with the route's own compilers if it set any, else `instance`'s (called once, when the app boots). */
  compile (instance: FastifyInstance, url: string, route: { validatorCompiler?: unknown, serializerCompiler?: unknown } = {}): void {
    const { receive, send } = this.#options
    try {
      const compiler = (route.validatorCompiler as ValidatorCompiler | undefined) ?? validatorFor(instance)
      if (receive !== undefined) this.#validate = compiler({ schema: receive, method: 'GET', url, httpPart: 'body' }) as Validate
    } catch (err) {
      throw new FST_WS_INVALID_SCHEMA(url, 'receive', (err as Error).message)
    }
    try {
      const compiler = (route.serializerCompiler as SerializerCompiler | undefined) ?? serializerFor(instance)
      if (send !== undefined) this.#serialize = compiler({ schema: send, method: 'GET', url, httpStatus: '200' }) as Serialize
    } catch (err) {
      throw new FST_WS_INVALID_SCHEMA(url, 'send', (err as Error).message)
    }
  }

  /** Parse and validate one inbound message. */
  decode (data: Buffer, isBinary: boolean): Decoded {
    if (isBinary) return { ok: false, reason: 'binary', errors: null }
    let value: unknown
    try {
      value = JSON.parse(data.toString())
    } catch (err) {
      return { ok: false, reason: 'json', errors: (err as Error).message }
    }
    return this.check(value)
  }

  /** Validate one already parsed message (the inside of an envelope). */
  check (value: unknown): Decoded {
    const validate = this.#validate
    if (validate === null) return { ok: true, value }
    const result = validate(value)
    if (result === true) return { ok: true, value }
    if (result === false) return { ok: false, reason: 'schema', errors: validate.errors ?? null }
    // The { value, error } shape (Zod's and other custom compilers; also what Fastify accepts from them).
    if (result !== null && typeof result === 'object') {
      const r = result as { value?: unknown, error?: unknown }
      if (r.error !== undefined && r.error !== null) return { ok: false, reason: 'schema', errors: r.error }
      if ('value' in r) return { ok: true, value: r.value }
    }
    return { ok: true, value }
  }

  /** Serialize one outbound message: with the `send` schema's serializer (which drops undeclared fields), else JSON.stringify. */
  encode (message: unknown): string {
    const serialize = this.#serialize
    return serialize === null ? JSON.stringify(message) : serialize(message)
  }
}

/** A topic channel's serializer (app.websocketServer.channel): the instance's serializer compiler, as for routes. */
export function compileSerializer (instance: FastifyInstance, schema: unknown): (message: unknown) => string {
  try {
    return serializerFor(instance)({ schema, method: 'GET', url: '(topic channel)', httpStatus: '200' }) as Serialize
  } catch (err) {
    throw new FST_WS_INVALID_SCHEMA('(topic channel)', 'channel', (err as Error).message)
  }
}

type ValidatorCompiler = (route: { schema: unknown, method: string, url: string, httpPart: string }) => unknown
type SerializerCompiler = (route: { schema: unknown, method: string, url: string, httpStatus: string }) => unknown

const defaultValidators = new WeakMap<object, ValidatorCompiler>()
const defaultSerializers = new WeakMap<object, SerializerCompiler>()

/**
 * The instance's compiler if Fastify has set one up (a custom one, or its default once a route used a schema),
 * else Fastify's default built the way Fastify builds it (once per instance).
 */
function compilerFor<C> (
  instance: FastifyInstance, own: unknown, cache: WeakMap<object, C>, selector: () => unknown, option: 'ajv' | 'serializerOpts'
): C {
  if (own !== undefined) return own as C
  let compiler = cache.get(instance)
  if (compiler === undefined) {
    const build = selector() as (schemas: unknown, options: unknown) => C
    compiler = build(instance.getSchemas(), fastifyServerOption(instance, option))
    cache.set(instance, compiler)
  }
  return compiler
}

function validatorFor (instance: FastifyInstance): ValidatorCompiler {
  return compilerFor(instance, instance.validatorCompiler, defaultValidators, AjvCompiler, 'ajv')
}

function serializerFor (instance: FastifyInstance): SerializerCompiler {
  return compilerFor(instance, instance.serializerCompiler, defaultSerializers, SerializerCompiler, 'serializerOpts')
}
