// The client's types: connect<Contract>() types what is sent, received, requested and replied; misuse (a wrong
// shape, a listener of the wrong type, an unknown event) does not compile.
import {
  connect, Client, RequestFailedError, type ClientContract, type ServerContract, type StopReason, type Gap,
  type TopicInfo, type FailureCode, type Position, type ContractOf
} from '../lib/client/index.js'
import type { ENVELOPE_PROTOCOL, WebSocket } from '../lib/index.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectType<T extends true> (): T | void {}

type Up = { type: 'join', nick: string } | { type: 'say', text: string }
type Down = { type: 'said', nick: string, text: string }

{
  const client = connect<{ send: Up, receive: Down }>('wss://chat.example.com/ws')
  expectType<Equal<typeof client, Client<{ send: Up, receive: Down }>>>()
  client.send({ type: 'join', nick: 'ada' })
  client.send({ type: 'say', text: 'hi' })
  // @ts-expect-error a join needs a nick
  client.send({ type: 'join' })
  // @ts-expect-error an unknown type
  client.send({ type: 'leave' })
  // @ts-expect-error the server's message shape is not the client's
  client.send({ type: 'said', nick: 'n', text: 't' })

  client.on('message', (message, topic) => {
    expectType<Equal<typeof message, Down>>()
    expectType<Equal<typeof topic, TopicInfo | undefined>>()
  })
  // @ts-expect-error a listener of the wrong type
  client.on('message', (message: Up) => message)
  // @ts-expect-error an unknown event
  client.on('mesage', () => {})
  client.on('close', (code, reason) => {
    expectType<Equal<typeof code, number>>()
    expectType<Equal<typeof reason, string>>()
  })
  client.on('gap', (gap) => {
    expectType<Equal<typeof gap, Gap>>()
    expectType<Equal<typeof gap.reason, 'epoch-changed' | 'history-expired' | 'unknown-position' | 'broker-unavailable'>>()
  })
  client.on('stopped', (why) => {
    expectType<Equal<typeof why, StopReason>>()
    if (why.reason === 'handshake-refused') expectType<Equal<typeof why.status, number>>()
    if (why.reason === 'close-code') expectType<Equal<typeof why.code, number>>()
  })
  client.on('drop', (message) => { expectType<Equal<typeof message, Up>>() })
  client.on('reconnecting', (attempt, delay) => { expectType<Equal<[typeof attempt, typeof delay], [number, number]>>() })
  // @ts-expect-error reconnecting gives numbers
  client.on('reconnecting', (attempt: string) => attempt)

  // Requests: the reply defaults to what the server sends.
  const reply = client.request({ type: 'say', text: 'x' }, { timeout: 1000 })
  expectType<Equal<typeof reply, Promise<Down>>>()
  // @ts-expect-error a request is a message the client sends
  void client.request({ type: 'said', nick: 'n', text: 't' })
  // @ts-expect-error timeout is a number
  void client.request({ type: 'say', text: 'x' }, { timeout: '1s' })

  // The server's requests: the handler gets what the server sends and returns what the client sends.
  client.onRequest((message) => {
    expectType<Equal<typeof message, Down>>()
    return { type: 'say', text: message.text }
  })
  client.onRequest(async () => ({ type: 'join', nick: 'n' }))
  // @ts-expect-error the reply must be a client message
  client.onRequest(() => ({ type: 'said', nick: 'n', text: 't' }))
  expectType<Equal<typeof client.positions, Record<string, Position>>>()
  expectType<Equal<typeof client.state, 'connecting' | 'open' | 'waiting' | 'stopped'>>()
}

// Replies of their own types.
{
  interface Api extends ClientContract {
    send: { op: 'get', id: number }
    receive: { event: 'changed', id: number }
    serverReply: { id: number, value: string }
    clientReply: { ok: boolean }
  }
  const client = connect<Api>('/api')
  expectType<Equal<Awaited<ReturnType<typeof client.request>>, { id: number, value: string }>>()
  client.onRequest(() => ({ ok: true }))
  // @ts-expect-error the client's reply type is clientReply, not send
  client.onRequest(() => ({ op: 'get', id: 1 }))
}

// From the route's side: ServerContract<what the route receives, what it sends>.
{
  const client = connect<ServerContract<Up, Down>>('/chat')
  client.send({ type: 'say', text: 'x' })
  client.on('message', (m) => { expectType<Equal<typeof m, Down>>() })
}

// Untyped: anything goes, messages are unknown.
{
  const client = connect('ws://localhost/ws', {
    reconnect: { base: 250, cap: 10_000, maxAttempts: 20, stableAfter: 5000 },
    outbox: { size: 50, policy: 'throw' },
    liveness: { idle: 25_000, timeout: 10_000 },
    retry: (code) => code === 4001 ? true : undefined
  })
  client.send({ any: 'thing' })
  client.on('message', (m) => { expectType<Equal<typeof m, unknown>>() })
  // @ts-expect-error no such policy
  connect('/x', { outbox: { policy: 'keep' } })
  // @ts-expect-error reconnect is false or options
  connect('/x', { reconnect: true })
  client.request(1).catch((err: unknown) => {
    if (err instanceof RequestFailedError) expectType<Equal<typeof err.reason, FailureCode>>()
  })
}

// From the type of the route's server socket.
{
  type ChatSocket = WebSocket<typeof ENVELOPE_PROTOCOL, Up, Down>
  expectType<Equal<ContractOf<ChatSocket>, ServerContract<Up, Down>>>()
  const client = connect<ContractOf<ChatSocket>>('/chat')
  client.send({ type: 'join', nick: 'n' })
  // @ts-expect-error what the route sends is not what the client sends
  client.send({ type: 'said', nick: 'n', text: 't' })
  client.on('message', (m) => { expectType<Equal<typeof m, Down>>() })
  // A socket of a route without the envelope's request(): no contract.
  expectType<Equal<ContractOf<{ send (data: string): void }>, never>>()
}
