// The example app as several instances on one Redis (REDIS_URL): rooms (messages, presence, history) are shared,
// and a page that loses its connection resumes on another instance from the last event it saw, without losing or
// repeating one. Raw `ws` clients for the protocol, headless Chromium for the page; a small TCP proxy in front
// plays the load balancer that sends a reconnecting page elsewhere.
import t from 'tap'
import net from 'node:net'
import type { Page } from 'playwright-core'
import WebSocket from 'ws'
import { Redis } from 'ioredis'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../example-app/server.js'
import type { RoomEvent, ServerMessage } from '../../example-app/chat.js'
import { startRedis, freePort } from '../helpers/redis.js'
import { waitFor, within } from '../helpers/index.js'
import { chromiumInstalled, launchChromium } from '../helpers/chromium.js'

t.setTimeout(120_000)

/** A TCP proxy to one backend at a time; switchTo() moves new connections and drops the current ones. */
class Proxy {
  readonly server: net.Server
  readonly sockets = new Set<net.Socket>()
  backend: number
  port = 0

  constructor (backend: number) {
    this.backend = backend
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.backend, '127.0.0.1')
      this.sockets.add(client)
      this.sockets.add(upstream)
      const drop = (): void => { client.destroy(); upstream.destroy(); this.sockets.delete(client); this.sockets.delete(upstream) }
      client.on('error', drop).on('close', drop)
      upstream.on('error', drop).on('close', drop)
      client.pipe(upstream)
      upstream.pipe(client)
    })
  }

  async listen (): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as net.AddressInfo).port
  }

  /** What a dropped Wi-Fi does: connections vanish; the next ones go to `backend`. */
  switchTo (backend: number): void {
    this.backend = backend
    for (const s of this.sockets) s.destroy()
  }

  async close (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

interface Instance { app: FastifyInstance, port: number, redis: Redis }

async function startInstance (redisUrl: string, origins: string[], fixedPort?: number): Promise<Instance> {
  const port = fixedPort ?? await freePort()
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 })
  redis.on('error', () => {})
  const app = buildApp({ port, redis, allowedOrigins: origins })
  await app.listen({ port, host: '127.0.0.1' })
  return { app, port, redis }
}

async function stopInstance (i: Instance): Promise<void> {
  await i.app.close()
  i.redis.disconnect()
}

type Received = ServerMessage | RoomEvent
interface Envelope { epoch: string, offset: number, data: RoomEvent }

/** A protocol client: direct replies and unwrapped room events, in order, with the last position. */
class ChatClient {
  readonly ws: WebSocket
  readonly received: Received[] = []
  pos: { epoch: string, offset: number } | undefined

  constructor (port: number, room: string, origin: string) {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/chat/${room}`, 'chat.v1', { origin })
    this.ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as ServerMessage | Envelope
      if ('offset' in m) {
        this.pos = { epoch: m.epoch, offset: m.offset }
        this.received.push(m.data)
      } else {
        this.received.push(m)
      }
    })
    this.ws.on('error', () => {})
  }

  static async join (port: number, room: string, origin: string, join: Record<string, unknown>): Promise<ChatClient> {
    const c = new ChatClient(port, room, origin)
    await within(new Promise((resolve, reject) => { c.ws.once('open', resolve); c.ws.once('error', reject) }), 5000, 'open')
    c.ws.send(JSON.stringify({ type: 'join', ...join }))
    await waitFor(() => c.received.some((m) => m.type === 'synced'), 5000, 'synced')
    return c
  }

  lines (): string[] {
    return this.received.flatMap((m) => m.type === 'message' ? [`${m.nick}: ${m.text}`] : [])
  }

  welcome (): Extract<ServerMessage, { type: 'welcome' }> {
    const w = this.received.find((m) => m.type === 'welcome')
    if (w === undefined || w.type !== 'welcome') throw new Error('no welcome')
    return w
  }
}

t.test('two instances: shared rooms, presence and history; a client resumes on the other instance', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const origin = 'http://127.0.0.1:1' // an origin both instances allow (raw clients send it)
  const a = await startInstance(redis.url, [origin])
  const b = await startInstance(redis.url, [origin])
  t.teardown(async () => { await stopInstance(a); await stopInstance(b) })

  const ann = await ChatClient.join(a.port, 'lobby', origin, { nick: 'ann', session: 'session-ann' })
  t.same(ann.welcome().presence, ['ann'])
  const bob = await ChatClient.join(b.port, 'lobby', origin, { nick: 'bob', session: 'session-bob' })
  t.same(bob.welcome().presence, ['ann', 'bob'], 'presence is shared: bob on b sees ann on a')
  const other = new ChatClient(b.port, 'lobby', origin)
  await within(new Promise((resolve) => other.ws.once('open', resolve)), 5000, 'open')
  other.ws.send(JSON.stringify({ type: 'join', nick: 'ann', session: 'someone-else' }))
  await waitFor(() => other.received.length > 0, 5000, 'an answer')
  t.match(other.received[0], { type: 'error', code: 'nick_taken' }, 'the nickname ann is taken across instances')
  other.ws.terminate()

  for (let i = 1; i <= 3; i++) bob.ws.send(JSON.stringify({ type: 'message', text: `before ${i}` }))
  await waitFor(() => ann.lines().length === 3, 5000, 'ann gets bob\'s lines through Redis')
  const position = ann.pos!
  ann.ws.terminate()
  for (let i = 1; i <= 3; i++) bob.ws.send(JSON.stringify({ type: 'message', text: `missed ${i}` }))
  await waitFor(() => bob.lines().length === 6, 5000, 'bob\'s own echo')

  // ann comes back on the other instance, with her session and her last position.
  const back = await ChatClient.join(b.port, 'lobby', origin, { nick: 'ann', session: 'session-ann', since: position })
  t.ok(back.received.every((m) => m.type !== 'reset'), 'resumed, not reset')
  t.same(back.lines(), ['bob: missed 1', 'bob: missed 2', 'bob: missed 3'], 'exactly what she missed, once')
  bob.ws.send(JSON.stringify({ type: 'message', text: 'after' }))
  await waitFor(() => back.lines().includes('bob: after'), 5000, 'live again')
  t.same(back.welcome().presence.sort(), ['ann', 'bob'])

  // A newcomer on a gets the room's history from Redis.
  const cat = await ChatClient.join(a.port, 'lobby', origin, { nick: 'cat' })
  t.same(cat.lines(), ['bob: before 1', 'bob: before 2', 'bob: before 3', 'bob: missed 1', 'bob: missed 2', 'bob: missed 3', 'bob: after'],
    'a newcomer on the other instance sees the history')
  for (const c of [back, bob, cat]) c.ws.terminate()
})

t.test('browser: two pages on two instances chat; one loses its connection and resumes on the other instance', async (t) => {
  if (!chromiumInstalled(t)) return
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  // Each page reaches the instances through its own proxy (its origin); both instances allow both origins.
  const proxyA = new Proxy(0)
  const proxyB = new Proxy(0)
  await proxyA.listen()
  await proxyB.listen()
  t.teardown(async () => { await proxyA.close(); await proxyB.close() })
  const origins = [`http://127.0.0.1:${proxyA.port}`, `http://127.0.0.1:${proxyB.port}`]
  const a = await startInstance(redis.url, origins)
  const b = await startInstance(redis.url, origins)
  let bStopped = false
  const stopB = async (): Promise<void> => { if (!bStopped) { bStopped = true; await stopInstance(b) } }
  t.teardown(async () => { await stopInstance(a); await stopB() })
  proxyA.backend = a.port
  proxyB.backend = b.port

  const browser = await launchChromium(t)
  const open = async (proxy: Proxy, nick: string): Promise<Page> => {
    const page = await (await browser.newContext()).newPage()
    page.setDefaultTimeout(10_000)
    await page.goto(`http://127.0.0.1:${proxy.port}/?room=cluster`)
    await page.fill('#nick', nick)
    await page.click('#join')
    await page.locator('#status[data-state="open"]').waitFor()
    return page
  }
  const texts = (page: Page): Promise<string[]> => page.locator('#messages li[data-type="message"] .text').allTextContents()
  const say = async (page: Page, text: string): Promise<void> => {
    await page.fill('#text', text)
    await page.press('#text', 'Enter')
  }

  const alice = await open(proxyA, 'alice') // on instance a
  const bob = await open(proxyB, 'bob') // on instance b
  await alice.locator('#presence li', { hasText: 'bob' }).waitFor()
  t.pass('alice (instance a) sees bob (instance b) present')
  await say(alice, 'one')
  await say(bob, 'two')
  await bob.locator('#messages li[data-type="message"]', { hasText: 'two' }).waitFor()
  await alice.locator('#messages li[data-type="message"]', { hasText: 'two' }).waitFor()
  t.same(await texts(bob), ['one', 'two'], 'bob sees both lines')

  // bob's connection drops; the balancer now sends him to instance a. alice keeps talking meanwhile.
  proxyB.switchTo(a.port)
  await bob.locator('#status[data-state="reconnecting"], #status[data-state="connecting"]').waitFor()
  await say(alice, 'three')
  await say(alice, 'four')
  await bob.locator('#status[data-state="open"]').waitFor({ timeout: 20_000 })
  await bob.locator('#messages li[data-type="message"]', { hasText: 'four' }).waitFor()
  await say(bob, 'five (from instance a)')
  await alice.locator('#messages li[data-type="message"]', { hasText: 'five' }).waitFor()
  await bob.locator('#messages li[data-type="message"]', { hasText: 'five' }).waitFor()
  t.same(await texts(bob), ['one', 'two', 'three', 'four', 'five (from instance a)'], 'bob shows every line once, in order, after resuming on the other instance')
  t.same(await texts(alice), ['one', 'two', 'three', 'four', 'five (from instance a)'], 'alice too')
  t.ok(await bob.locator('#messages li.notice', { hasText: 'reconnected, ' }).count() > 0, 'the page says it resumed')
  t.equal(await bob.locator('#messages li.notice', { hasText: 'reloaded' }).count(), 0, 'no reset was needed')
  t.same(await bob.locator('#presence li').allTextContents(), ['alice', 'bob'], 'presence intact')

  // Back to instance b, and b restarts while alice (on a) keeps talking: bob's page comes back to the new b
  // process and shows what it missed, once.
  proxyB.switchTo(b.port)
  await bob.locator('#status[data-state="open"]').waitFor({ timeout: 20_000 })
  await stopB()
  await say(alice, 'six')
  await say(alice, 'seven')
  const b2 = await startInstance(redis.url, origins, b.port)
  t.teardown(() => stopInstance(b2))
  await bob.locator('#messages li[data-type="message"]', { hasText: 'seven' }).waitFor({ timeout: 20_000 })
  await say(bob, 'eight (from the restarted b)')
  await alice.locator('#messages li[data-type="message"]', { hasText: 'eight' }).waitFor()
  await bob.locator('#messages li[data-type="message"]', { hasText: 'eight' }).waitFor()
  const all = ['one', 'two', 'three', 'four', 'five (from instance a)', 'six', 'seven', 'eight (from the restarted b)']
  t.same(await texts(bob), all, 'bob: every line once, in order, across a dropped connection and a server restart')
  t.same(await texts(alice), all, 'alice too')
})
