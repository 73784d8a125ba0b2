// The seam between the Redis broker's subscriber connection and its history reads: while an instance reads missed
// messages (a gap), live ones wait in a queue. If the read is slow or failing while messages keep coming, that
// queue must stay bounded, and what it drops must be read back from the history. Driven by a scripted client (no
// Redis): the history read is held open while 200,000 live messages of 1 KiB arrive.
import t from 'tap'
import { EventEmitter } from 'node:events'
import { buildApp } from '../helpers/index.js'
import { settledMemory, mib, MiB } from '../helpers/memory.js'
import { RedisTopics, type RedisClient, type TopicGap } from '../../lib/index.js'

interface Call { args: Array<string | Buffer | number>, resolve: (v: unknown) => void }

/** Answers SCRIPT LOAD, presence and publish; holds every history read (RECOVER) for the test to answer. */
class ScriptedRedis extends EventEmitter {
  status = 'ready'
  isCluster = false
  sub: ScriptedRedis | null = null
  readonly recovers: Call[] = []

  duplicate (): ScriptedRedis {
    this.sub = new ScriptedRedis()
    return this.sub
  }

  async callBuffer (command: string, ...args: Array<string | Buffer | number>): Promise<unknown> {
    if (command === 'SCRIPT') return Buffer.from('sha')
    const numkeys = Number(args[1])
    if (numkeys === 2 && args.length === 2 + 2 + 1) {
      return new Promise((resolve) => { this.recovers.push({ args: args.slice(4), resolve }) })
    }
    return []
  }

  async subscribe (): Promise<unknown> { return 1 }
  async unsubscribe (): Promise<unknown> { return 0 }
  async ssubscribe (): Promise<unknown> { return 1 }
  async sunsubscribe (): Promise<unknown> { return 0 }
  async quit (): Promise<unknown> { return 'OK' }
  disconnect (): void {}
}

const live = (offset: number, data: Buffer | string): Buffer => Buffer.concat([Buffer.from(`e1\n${offset}\n0\n\n`), Buffer.from(data)])
const entry = (offset: number, data: string): unknown[] => [Buffer.from(`${offset}-0`), [Buffer.from('o'), Buffer.from(String(offset)), Buffer.from('f'), Buffer.from('0'), Buffer.from('x'), Buffer.from(''), Buffer.from('d'), Buffer.from(data)]]

t.test('a held history read with 200,000 live messages of 1 KiB arriving: the queue stays bounded, then what it dropped is read back', async (t) => {
  const redis = new ScriptedRedis()
  const broker = new RedisTopics({ client: redis as unknown as RedisClient })
  const { app } = await buildApp({ topics: broker })
  app.get('/t', { websocket: true }, (socket) => { void socket.subscribe('room') })
  t.teardown(() => app.close())
  const client = await app.injectWS('/t')
  const received: string[] = []
  const gaps: TopicGap[] = []
  client.on('message', (data) => { received.push(data.toString().slice(0, 12)) })
  const server = [...app.websocketServer.clients][0]!
  server.on('topicGap', (gap) => { gaps.push(gap) })
  const sub = redis.sub!
  const channel = Buffer.from('ws:{room}')

  // First sync: the position is read once subscribed.
  await t.resolveMatch(new Promise((resolve) => setImmediate(resolve)).then(() => redis.recovers.length), 1)
  redis.recovers.shift()!.resolve([Buffer.from('e1'), 0, []])
  await new Promise((resolve) => setImmediate(resolve))
  sub.emit('messageBuffer', channel, live(1, 'one'))
  sub.emit('messageBuffer', channel, live(2, 'two'))
  // Offset 5 skips 3 and 4: the instance reads them from the history, and that read is held.
  sub.emit('messageBuffer', channel, live(5, 'five'))
  t.equal(redis.recovers.length, 1, 'a history read for the gap')
  t.equal(redis.recovers[0]!.args[0], 2, 'from the last delivered offset')

  const before = await settledMemory()
  const payload = Buffer.alloc(1024, 0x61)
  const N = 200_000
  for (let i = 0; i < N; i++) sub.emit('messageBuffer', channel, live(6 + i, payload))
  const held = await settledMemory()
  // What is held: heap and buffers. (RSS also keeps the allocator's pages of the 195 MiB this test streamed
  // through, whether the broker holds it or not, so it is reported, not bounded here.)
  const grew = (held.heapUsed + held.arrayBuffers) - (before.heapUsed + before.arrayBuffers)
  t.comment(`${N} messages of 1 KiB (${mib(N * 1024)}) behind a held read: heap + buffers +${mib(grew)}, RSS +${mib(held.rss - before.rss)}`)
  t.ok(grew < 24 * MiB, `bounded by the queue's limits (8 MiB, 10,000 messages), not by what arrived: +${mib(grew)}`)

  // The held read answers (3 and 4); the queue overflowed, so the instance reads on from there.
  redis.recovers.shift()!.resolve([Buffer.from('e1'), 4, [entry(4, 'four'), entry(3, 'three')]])
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(redis.recovers.length, 1, 'a second read, for what the full queue dropped')
  t.equal(redis.recovers[0]!.args[0], 4, 'from after what was delivered')
  // The history no longer holds all of it: the socket is told, and nothing partial is delivered.
  const last = 5 + N
  redis.recovers.shift()!.resolve([Buffer.from('e1'), last, []])
  await new Promise((resolve) => setTimeout(resolve, 50))
  sub.emit('messageBuffer', channel, live(last + 1, 'after'))
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(received, ['one', 'two', 'three', 'four', 'after'], 'in order, no partial replay, then live')
  t.match(gaps, [{ topic: 'room', reason: 'history-expired', offset: last }], 'the gap was signalled')
  client.terminate()
})
