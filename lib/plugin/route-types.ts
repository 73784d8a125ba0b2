/**
 * The types a user writes routes against: the WebSocket handler, Fastify's route shorthand and route options
 * augmented with `websocket`/`wsHandler`, and the `webSocketRoute()` helper for `app.route()`.
 */
import type {
  FastifyInstance, FastifyRequest, FastifyBaseLogger, FastifySchema, FastifyTypeProvider,
  FastifyTypeProviderDefault, RawServerBase, RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression,
  RouteGenericInterface, ContextConfigDefault, RouteOptions
} from 'fastify'
import type { RouteWebSocketOptions } from './options.js'
import type { MessagesOption } from './message-schemas.js'
import type { WebSocketServer } from './server.js'
import type { InjectWSOptions } from '../testing/inject.js'
import type { WebSocket, RawMessages } from '../socket/websocket.js'

/**
 * The protocols a route's generics declare with the `Protocols` key (`{ Params: ..., Protocols: ['chat.v1'] }`,
 * a tuple like the option, or a union `'chat.v1' | 'chat.v2'`), else `readonly string[]`. With explicit route
 * generics TypeScript infers nothing else (no partial type argument inference), so this key is how that
 * spelling keeps `socket.protocol` a literal union.
 */
export type RouteProtocols<RouteGeneric> = RouteGeneric extends { Protocols: infer P }
  ? [P] extends [readonly string[]] ? P : [P] extends [string] ? readonly P[] : readonly string[]
  : readonly string[]

/**
 * The type of the messages a route receives, from its `messages.receive` schema through the app's type provider
 * (as Fastify types `request.body` from `schema.body`); `RawMessages` when the route declares no `receive` schema.
 */
export type IncomingMessageOf<TypeProvider extends FastifyTypeProvider, Messages> =
  Messages extends { receive: infer S } ? (TypeProvider & { schema: S })['validator'] : RawMessages

/**
 * The type `socket.sendMessage()` takes, from the route's `messages.send` schema through the app's type provider.
 * (Both apply the type provider the way Fastify does for `schema.body` and `schema.response`.)
 */
export type OutgoingMessageOf<TypeProvider extends FastifyTypeProvider, Messages> =
  Messages extends { send: infer S } ? (TypeProvider & { schema: S })['serializer'] : unknown

export type WebSocketHandler<
  Protocol extends string = string,
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  ContextConfig = ContextConfigDefault,
  SchemaCompiler extends FastifySchema = FastifySchema,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
  Logger extends FastifyBaseLogger = FastifyBaseLogger,
  Messages = object
> = (
  this: FastifyInstance<RawServer, RawRequest, RawReplyDefaultExpression<RawServer>, Logger, TypeProvider>,
  socket: WebSocket<Protocol, IncomingMessageOf<TypeProvider, Messages>, OutgoingMessageOf<TypeProvider, Messages>>,
  request: FastifyRequest<RouteGeneric, RawServer, RawRequest, SchemaCompiler, TypeProvider, ContextConfig, Logger>
) => void | Promise<unknown>

/* eslint-disable @typescript-eslint/no-unused-vars -- merged declarations must repeat Fastify's type parameters */
declare module 'fastify' {
  interface FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider> {
    /** The open sockets, topic publishing. */
    websocketServer: WebSocketServer<TypeProvider>
    /** Connect to a WebSocket route in memory (no port): resolves to a client socket, rejects with the HTTP status on refusal. */
    injectWS (path: string, options?: InjectWSOptions): Promise<WebSocket>
    /** A route with a WebSocket handler next to its HTTP handler: the socket's protocol is typed from `websocket.protocols`. */
    route<RouteGeneric extends RouteGenericInterface = RouteGenericInterface, ContextConfig = ContextConfigDefault,
      const SchemaCompiler extends FastifySchema = FastifySchema, const Protocols extends readonly string[] = RouteProtocols<RouteGeneric>,
      const Messages extends MessagesOption = object>(
      opts: Omit<RouteOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger>, 'websocket' | 'wsHandler'> & {
        websocket: true | RouteWebSocketOptions<Protocols, Messages>
        wsHandler: WebSocketHandler<Protocols[number], RawServer, RawRequest, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger, Messages>
      }
    ): FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  }

  interface RouteShorthandOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> {
    /** Serve WebSocket upgrades on this route: `true`, or per-route options that override the plugin's. */
    websocket?: boolean | RouteWebSocketOptions<RouteProtocols<RouteGeneric>>
  }

  interface RouteShorthandMethod<RawServer, RawRequest, RawReply, TypeProvider, Logger> {
    <RouteGeneric extends RouteGenericInterface = RouteGenericInterface, ContextConfig = ContextConfigDefault,
      const SchemaCompiler extends FastifySchema = FastifySchema, const Protocols extends readonly string[] = RouteProtocols<RouteGeneric>,
      const Messages extends MessagesOption = object>(
      path: string,
      opts: RouteShorthandOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> &
        { websocket: true | RouteWebSocketOptions<Protocols, Messages> },
      handler: WebSocketHandler<Protocols[number], RawServer, RawRequest, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger, Messages>
    ): FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  }

  interface RouteOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> {
    /** The WebSocket handler of a route that also serves plain HTTP with `handler`. */
    wsHandler?: WebSocketHandler<RouteProtocols<RouteGeneric>[number], RawServer, RawRequest, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger>
  }
}

/* eslint-enable @typescript-eslint/no-unused-vars */

/** `app.route()` options for a WebSocket-only route: `handler` receives the socket. */
export interface WebSocketRouteOptions<
  Protocols extends readonly string[] = readonly string[],
  RawServer extends RawServerBase = RawServerDefault,
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  Messages extends MessagesOption = object,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault
> extends Omit<RouteOptions<RawServer, RawRequestDefaultExpression<RawServer>, RawReplyDefaultExpression<RawServer>, RouteGeneric>, 'handler' | 'websocket'> {
  websocket: true | RouteWebSocketOptions<Protocols, Messages>
  handler: WebSocketHandler<Protocols[number], RawServer, RawRequestDefaultExpression<RawServer>, RouteGeneric, ContextConfigDefault, FastifySchema, TypeProvider, FastifyBaseLogger, Messages>
}

/**
 * Type helper for `app.route()`: a WebSocket route whose `handler` receives the socket. Generics as for
 * `app.route<RouteGeneric>()`; the protocols are inferred from `websocket.protocols`, or taken from the
 * generics' `Protocols` key when the generics are written.
 */
export function webSocketRoute<RouteGeneric extends RouteGenericInterface = RouteGenericInterface, const Protocols extends readonly string[] = RouteProtocols<RouteGeneric>,
  const Messages extends MessagesOption = object, TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault> (
  options: WebSocketRouteOptions<Protocols, RawServerDefault, RouteGeneric, Messages, TypeProvider>
): RouteOptions {
  return options as unknown as RouteOptions
}

