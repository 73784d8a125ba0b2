/**
 * fastify-rfc6455: WebSocket routes for Fastify, with the RFC 6455 engine built in. This file is the public
 * surface: the plugin and every exported type.
 */
import fp from 'fastify-plugin'
import { plugin } from './plugin/plugin.js'

export const fastifyWebSocket = fp(plugin, { fastify: '5.x', name: 'fastify-rfc6455' })
export default fastifyWebSocket

export { webSocketRoute } from './plugin/route-types.js'
export type { WebSocketHandler, WebSocketRouteOptions, RouteProtocols, IncomingMessageOf, OutgoingMessageOf } from './plugin/route-types.js'
export { WebSocket } from './socket/websocket.js'
export type { WebSocketEvents, SendData, SendOptions, WriteCallback, IteratedMessage, ReadyState, RawMessages, MessageArgs, MessageTypeOf, MessageOfType, MessageHandler } from './socket/websocket.js'
export type { MessagesOption, InvalidMessagePolicy } from './plugin/message-schemas.js'
export { WebSocketServer } from './plugin/server.js'
export type { PublishOptions, TopicChannel, TopicRequestOutcome } from './plugin/server.js'
export { ENVELOPE_PROTOCOL } from './socket/envelope.js'
export type {
  TopicBroker, TopicPosition, SubscribeOptions, SubscribeResult, TopicGap, TopicGapReason, PublishResult, SubscriberCounts, BrokerContext
} from './topics/types.js'
export type { TopicEnvelope, TopicMessage } from './topics/envelope.js'
export type { HistoryLimits } from './topics/history.js'
export { MemoryTopics, type MemoryTopicsOptions } from './topics/memory.js'
export { RedisTopics, type RedisTopicsOptions, type RedisClient } from './topics/redis/redis-topics.js'
export type { WebSocketPluginOptions, RouteWebSocketOptions, WebSocketLimits, WebSocketPolicy, SelectProtocol } from './plugin/options.js'
export type { OriginsOption, OriginFunction, OriginPattern } from './http/origin.js'
export type { PortsOption } from './http/ports.js'
export type { HeartbeatOptions } from './protocol/connection.js'
export type { InjectWSOptions } from './testing/inject.js'
export type { PerMessageDeflateOptions } from './extensions/permessage-deflate/options.js'
export type { WebSocketError, InvalidMessageError } from './errors.js'
export { HandshakeRejectedError } from './errors.js'
export * as errors from './errors.js'
