// Type-level tests of the fastify-rfc6455.v1 envelope on the server: requests both ways are typed from the
// route's schemas. Compiled by `npm test`, never run.
import Fastify from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import websocket, { ENVELOPE_PROTOCOL, type TopicRequestOutcome, type TopicPosition } from '../lib/index.js'

function expectType<T> (_value: T): void {}

const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
await app.register(websocket)
const Ask = Type.Object({ type: Type.Literal('ask'), question: Type.String() })
const Answer = Type.Object({ type: Type.Literal('answer'), text: Type.String() })

app.get('/rpc', { websocket: { protocols: [ENVELOPE_PROTOCOL], messages: { receive: Ask, send: Answer } } }, async (socket) => {
  socket.onRequest((message) => {
    expectType<string>(message.question)
    return { type: 'answer', text: message.question.toUpperCase() }
  })
  // @ts-expect-error the reply must match the send schema
  socket.onRequest(() => ({ type: 'answer', text: 42 }))
  const reply = await socket.request({ type: 'answer', text: 'ping?' }, { timeout: 1000 })
  expectType<'ask'>(reply.type)
  // @ts-expect-error a request is serialized by the send schema
  void socket.request({ type: 'ask', question: 'wrong direction' })
  const positions = await socket.clientPositions()
  expectType<ReadonlyMap<string, TopicPosition>>(positions)
  await socket.subscribe('room', { since: positions.get('room') ?? 'history' })
  const outcomes = await app.websocketServer.request('room', { type: 'answer', text: 'all' })
  expectType<TopicRequestOutcome[]>(outcomes)
  for (const o of outcomes) if (!o.ok) expectType<Error>(o.error)
})
