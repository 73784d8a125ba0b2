// End-to-end tests of the example chat app (example-app/): the JSON protocol
// over a Node WebSocket client, the handshake policy at the HTTP level, and
// the page itself in a real (headless) Chromium driven by playwright-core.
import t from 'tap'
import { once } from 'node:events'
import { copyFileSync, existsSync, mkdirSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { spawn } from 'node:child_process'
import type { BrowserContext, Page } from 'playwright-core'
import WS from 'ws'
import type { FastifyInstance } from 'fastify'
import { buildApp, defaultOrigins, MAX_FRAME_BYTES, optionsFromEnv, start } from '../../example-app/server.js'
import { HISTORY_SIZE, MAX_TEXT_LENGTH } from '../../example-app/chat.js'
import type { ChatLine, RoomEvent, ServerMessage as DirectMessage } from '../../example-app/chat.js'

import { within as withTimeout, delay as sleep } from '../helpers/index.js'
import { chromiumInstalled, launchChromium } from '../helpers/chromium.js'

/** What a client reads: direct replies, and room events unwrapped from their envelopes. */
type ServerMessage = DirectMessage | RoomEvent
interface Envelope { topic: string, epoch: string, offset: number, data: RoomEvent }

const WAIT = 10_000 // default bound for a single wait (generous: CI runs test files in parallel)
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url)
const SCREENSHOT = new URL('example-app.png', ARTIFACTS)
const README_SCREENSHOT = new URL('../../example-app/screenshot.png', import.meta.url)

t.setTimeout(120_000)

// ---------------------------------------------------------------------------
// helpers

/** A port that was free a moment ago (the port policy needs it before listen). */
async function freePort (): Promise<number> {
  const srv = net.createServer()
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  const { port } = srv.address() as AddressInfo
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

async function startApp (port: number, opts: { allowedOrigins?: string[] } = {}): Promise<FastifyInstance> {
  const app = buildApp({ port, ...opts })
  await withTimeout(app.listen({ port, host: '127.0.0.1' }), WAIT, `listen on ${port}`)
  return app
}

async function closeApp (app: FastifyInstance | undefined): Promise<void> {
  if (app === undefined) return
  await withTimeout(app.close(), 10_000, 'app.close()')
}

interface UpgradeResult {
  status: number
  headers: http.IncomingHttpHeaders
}

/** Sends a raw upgrade request and reports the status line (101 or a refusal). */
function rawUpgrade (port: number, path: string, headers: Record<string, string>): Promise<UpgradeResult> {
  return withTimeout(new Promise<UpgradeResult>((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      agent: false, // a fresh connection per request: a refused upgrade may close it
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Protocol': 'chat.v1',
        Host: `127.0.0.1:${port}`,
        ...headers
      }
    })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: res.statusCode ?? 0, headers: res.headers })
    })
    req.on('response', (res) => {
      res.resume()
      resolve({ status: res.statusCode ?? 0, headers: res.headers })
    })
    req.on('error', reject)
    req.end()
  }), WAIT, `upgrade ${path}`)
}

type WhatwgCtor = new (url: string, protocols?: string | string[]) => WebSocketLike
interface WebSocketLike {
  readonly readyState: number
  readonly protocol: string
  send (data: string | Uint8Array): void
  close (code?: number, reason?: string): void
  addEventListener (type: string, listener: (ev: WsEvent) => void): void
}
interface WsEvent { data?: unknown, code?: number, reason?: string }

/**
 * Node's WHATWG WebSocket (global from Node 22) or, on Node 20, the `ws`
 * package, which exposes the same EventTarget-style interface.
 */
const ClientWebSocket: WhatwgCtor =
  (globalThis as { WebSocket?: WhatwgCtor }).WebSocket ?? (WS as unknown as WhatwgCtor)
t.comment(`protocol tests use ${ClientWebSocket === (WS as unknown) ? 'the ws package' : "Node's global WebSocket"} as client`)

/** A chat client that records every server message for ordered assertions. */
class ChatClient {
  readonly received: ServerMessage[] = []
  /** The position of each room event received, in order. */
  readonly positions: Array<{ epoch: string, offset: number }> = []
  readonly ws: WebSocketLike
  readonly opened: Promise<void>
  readonly closed: Promise<{ code: number, reason: string }>
  #cursor = 0
  #wake: (() => void) | undefined

  constructor (url: string) {
    this.ws = new ClientWebSocket(url, 'chat.v1')
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener('open', () => resolve())
      this.ws.addEventListener('error', () => reject(new Error(`connection error: ${url}`)))
      this.ws.addEventListener('close', () => reject(new Error(`closed before open: ${url}`)))
    })
    this.opened.catch(() => {})
    this.closed = new Promise((resolve) => {
      this.ws.addEventListener('close', (ev) => resolve({ code: ev.code ?? 0, reason: ev.reason ?? '' }))
    })
    this.ws.addEventListener('message', (ev) => {
      if (typeof ev.data === 'string') {
        const m = JSON.parse(ev.data) as DirectMessage | Envelope
        if ('offset' in m) {
          this.positions.push({ epoch: m.epoch, offset: m.offset })
          this.received.push(m.data)
        } else {
          this.received.push(m)
        }
      }
      else this.received.push({ type: 'error', code: 'bad_message', message: 'test client: got a binary frame' })
      this.#wake?.()
    })
  }

  static async open (port: number, room: string): Promise<ChatClient> {
    const c = new ChatClient(`ws://127.0.0.1:${port}/chat/${room}`)
    await withTimeout(c.opened, WAIT, `open /chat/${room}`)
    return c
  }

  send (msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg))
  }

  /** The next unread message. */
  async next (ms = WAIT): Promise<ServerMessage> {
    const deadline = Date.now() + ms
    while (this.#cursor >= this.received.length) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no message within ${ms} ms (read ${this.#cursor})`)
      await withTimeout(new Promise<void>((resolve) => { this.#wake = resolve }), left, 'next message')
        .catch(() => {})
    }
    return this.received[this.#cursor++]!
  }

  /** Reads on until a message of that type arrives, and returns it. */
  async until<K extends ServerMessage['type']> (type: K, pred: (m: Extract<ServerMessage, { type: K }>) => boolean = () => true, ms = WAIT): Promise<Extract<ServerMessage, { type: K }>> {
    const deadline = Date.now() + ms
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()))
      if (m.type === type && pred(m as Extract<ServerMessage, { type: K }>)) return m as Extract<ServerMessage, { type: K }>
    }
  }

  /** Join, and read the welcome and the replayed log up to 'synced': its chat lines are returned as `history`. */
  async join (nick: string, extra: Record<string, unknown> = {}): Promise<Extract<ServerMessage, { type: 'welcome' }> & { history: ChatLine[], replayed: number }> {
    this.send({ type: 'join', nick, ...extra })
    const m = await this.next()
    if (m.type !== 'welcome') throw new Error(`join ${nick}: expected welcome, got ${JSON.stringify(m)}`)
    const history: ChatLine[] = []
    for (;;) {
      const r = await this.next()
      if (r.type === 'synced') return { ...m, history, replayed: r.replayed }
      if (r.type === 'message') history.push(r)
    }
  }

  async close (): Promise<void> {
    if (this.ws.readyState < 2) this.ws.close(1000)
    await withTimeout(this.closed, WAIT, 'client close')
  }
}

// ---------------------------------------------------------------------------
// the server under test

const port = await freePort()
let app: FastifyInstance | undefined = await startApp(port)
t.teardown(async () => { await closeApp(app) })
const base = `http://127.0.0.1:${port}`

t.test('static files', async (t) => {
  const cases: Array<[string, string, string]> = [
    ['/', 'text/html', '<script src="/app.js"'],
    ['/app.js', 'text/javascript', "import { connect as connectClient } from '/client.js'"],
    ['/client.js', 'text/javascript', "fastify-rfc6455.v1"],
    ['/style.css', 'text/css', ':root']
  ]
  for (const [path, type, snippet] of cases) {
    const res = await withTimeout(fetch(base + path), WAIT, `GET ${path}`)
    t.equal(res.status, 200, `GET ${path}`)
    t.match(res.headers.get('content-type'), type, `${path} content-type`)
    t.match(await res.text(), snippet, `${path} body`)
  }
  const missing = await withTimeout(fetch(base + '/nope.js'), WAIT, 'GET /nope.js')
  t.equal(missing.status, 404)
  await missing.arrayBuffer()
})

t.test('handshake policy (raw HTTP)', async (t) => {
  const ok = await rawUpgrade(port, '/chat/lobby', { Origin: base })
  t.equal(ok.status, 101, 'allowed Origin upgrades')
  t.equal(ok.headers['sec-websocket-protocol'], 'chat.v1', 'chat.v1 is selected')

  const localhost = await rawUpgrade(port, '/chat/lobby', { Origin: `http://localhost:${port}` })
  t.equal(localhost.status, 101, 'http://localhost:PORT is allowed too')

  const evil = await rawUpgrade(port, '/chat/lobby', { Origin: 'http://evil.example' })
  t.equal(evil.status, 403, 'foreign Origin -> 403')

  const otherPort = await rawUpgrade(port, '/chat/lobby', { Origin: `http://127.0.0.1:${port + 1}` })
  t.equal(otherPort.status, 403, 'same host, other port -> 403')

  const badRoom = await rawUpgrade(port, '/chat/Not_A_Room', { Origin: base })
  t.equal(badRoom.status, 400, 'room failing the params schema -> 400')

  const longRoom = await rawUpgrade(port, '/chat/' + 'a'.repeat(33), { Origin: base })
  t.equal(longRoom.status, 400, 'room over 32 chars -> 400')
})

t.test('port policy follows the configured port', async (t) => {
  // An app told it serves port A but actually listening on B must refuse upgrades.
  const [a, b] = [await freePort(), await freePort()]
  const misconfigured = buildApp({ port: a })
  await withTimeout(misconfigured.listen({ port: b, host: '127.0.0.1' }), WAIT, 'listen')
  t.teardown(() => closeApp(misconfigured))
  const res = await rawUpgrade(b, '/chat/lobby', { Origin: `http://127.0.0.1:${a}`, Host: `127.0.0.1:${a}` })
  t.equal(res.status, 403, 'upgrade on a port outside the policy -> 403')
})

t.test('protocol errors', async (t) => {
  const c = await ChatClient.open(port, 'errors')
  t.teardown(() => c.close())

  c.send('{not json')
  t.match(await c.next(), { type: 'error', code: 'bad_json' }, 'invalid JSON -> error')

  c.send('42')
  t.match(await c.next(), { type: 'error', code: 'bad_message' }, 'non-object JSON -> error')

  c.send({ type: 'shout', text: 'hi' })
  t.match(await c.next(), { type: 'error', code: 'unknown_type' }, 'unknown type -> error')

  c.send({ type: 'message', text: 'too early' })
  t.match(await c.next(), { type: 'error', code: 'not_joined' }, 'message before join -> error')

  for (const nick of ['', 'has space', 'x'.repeat(25), '<b>', 'émile']) {
    c.send({ type: 'join', nick })
    t.match(await c.next(), { type: 'error', code: 'bad_nick' }, `bad nickname ${JSON.stringify(nick)} -> error`)
  }
  c.send({ type: 'join', nick: 42 })
  t.match(await c.next(), { type: 'error', code: 'bad_nick' }, 'non-string nickname -> error')

  c.ws.send(new Uint8Array([1, 2, 3]))
  t.match(await c.next(), { type: 'error', code: 'binary_unsupported' }, 'binary frame -> error')

  const welcome = await c.join('x'.repeat(24))
  t.match(welcome, { type: 'welcome', room: 'errors', presence: ['x'.repeat(24)] }, '24-char nickname is fine; the socket survived the errors')
  t.match(await c.next(), { type: 'presence', nicks: ['x'.repeat(24)] })

  c.send({ type: 'join', nick: 'again' })
  t.match(await c.next(), { type: 'error', code: 'already_joined' }, 'second join -> error')

  c.send({ type: 'message', text: 'y'.repeat(MAX_TEXT_LENGTH + 1) })
  t.match(await c.next(), { type: 'error', code: 'bad_text' }, 'overlong text -> error')
  c.send({ type: 'message', text: '   ' })
  t.match(await c.next(), { type: 'error', code: 'bad_text' }, 'blank text -> error')
  c.send({ type: 'message' })
  t.match(await c.next(), { type: 'error', code: 'bad_text' }, 'missing text -> error')

  const other = await ChatClient.open(port, 'errors')
  t.teardown(() => other.close())
  other.send({ type: 'join', nick: 'x'.repeat(24) })
  t.match(await other.next(), { type: 'error', code: 'nick_taken' }, 'nickname unique per room')

  const big = await ChatClient.open(port, 'errors')
  big.send({ type: 'message', text: 'z'.repeat(MAX_FRAME_BYTES) })
  t.equal((await withTimeout(big.closed, WAIT, 'close 1009')).code, 1009, `a frame over ${MAX_FRAME_BYTES} bytes closes the socket with 1009`)

  const elsewhere = await ChatClient.open(port, 'errors-elsewhere')
  t.teardown(() => elsewhere.close())
  t.match(await elsewhere.join('x'.repeat(24)), { type: 'welcome' }, 'same nickname in another room is fine')
})

t.test('messages the route schema refuses get an error reply; the socket stays open', async (t) => {
  const c = await ChatClient.open(port, 'schema')
  t.teardown(() => c.close())
  const refused: Array<[message: unknown, code: string, what: string]> = [
    ['null', 'bad_message', 'null'],
    ['[]', 'bad_message', 'an array'],
    [{}, 'bad_message', 'an object without type'],
    [{ type: 3 }, 'bad_message', 'a type that is not a string'],
    [{ type: 'join' }, 'bad_nick', 'a join without nick'],
    [{ type: 'join', nick: true }, 'bad_nick', 'a boolean nick (not coerced to "true")'],
    [{ type: 'join', nick: ['ann'] }, 'bad_nick', 'an array nick (not coerced to its element)'],
    [{ type: 'message', text: 42 }, 'bad_text', 'a number text (not coerced to "42")'],
    [{ type: 'message', text: '\n\t \u00a0' }, 'bad_text', 'a text of whitespace only']
  ]
  for (const [message, code, what] of refused) {
    c.send(message)
    t.match(await c.next(), { type: 'error', code }, `${what} -> ${code}`)
  }

  c.send({ type: 'x'.repeat(100) })
  const unknown = await c.next()
  t.same(unknown, { type: 'error', code: 'unknown_type', message: `unknown message type "${'x'.repeat(32)}"` },
    'an unknown type is named in the reply (cut at 32 characters)')

  t.equal(c.ws.readyState, 1, `still open after ${refused.length + 1} refused messages`)
  const welcome = await c.join('ann')
  t.match(welcome, { type: 'welcome', nick: 'ann', presence: ['ann'] }, 'and a valid join is then accepted')
  t.same(await c.next(), { type: 'presence', nicks: ['ann'] })

  c.send({ type: 'message', text: 'with extras', html: '<b>x</b>', nick: 'mallory' })
  const said = await c.next()
  t.match(said, { ts: Number }, 'a chat line carries the server time')
  t.same({ ...said, ts: 0 }, { type: 'message', nick: 'ann', text: 'with extras', ts: 0 },
    'fields the schema does not declare are ignored (the nick is the session\'s)')
  c.send({ type: 'message', text: ' ' + 'y'.repeat(MAX_TEXT_LENGTH - 2) + ' ' })
  t.match(await c.next(), { type: 'message', text: 'y'.repeat(MAX_TEXT_LENGTH - 2) }, `${MAX_TEXT_LENGTH} characters with the padding are accepted, then trimmed`)
})

t.test('fan-out, presence, join/leave, history', async (t) => {
  const a = await ChatClient.open(port, 'history')
  t.teardown(() => a.close())
  t.same((await a.join('ann')).history, [], 'empty history in a new room')
  t.same(await a.next(), { type: 'presence', nicks: ['ann'] })

  const total = HISTORY_SIZE + 10
  for (let i = 0; i < total; i++) a.send({ type: 'message', text: `msg ${i}` })
  const echoes: string[] = []
  for (let i = 0; i < total; i++) {
    const m = await a.next()
    echoes.push(m.type === 'message' && m.nick === 'ann' && typeof m.ts === 'number' ? m.text : JSON.stringify(m))
  }
  t.same(echoes, Array.from({ length: total }, (_, i) => `msg ${i}`), `${total} messages published back in order`)

  const b = await ChatClient.open(port, 'history')
  t.teardown(() => b.close())
  const welcome = await b.join('bob')
  t.equal(welcome.room, 'history')
  t.equal(welcome.history.length, HISTORY_SIZE, `welcome carries the last ${HISTORY_SIZE} messages`)
  t.equal(welcome.history[0]?.text, `msg ${total - HISTORY_SIZE}`, 'oldest kept')
  t.equal(welcome.history.at(-1)?.text, `msg ${total - 1}`, 'newest kept')
  t.same(welcome.presence, ['ann', 'bob'], 'presence in welcome')
  t.same(await a.next(), { type: 'joined', nick: 'bob' }, 'others see "joined"')
  t.same(await a.next(), { type: 'presence', nicks: ['ann', 'bob'] })
  t.same(await b.next(), { type: 'presence', nicks: ['ann', 'bob'] }, 'newcomer gets presence, not its own "joined"')

  b.send({ type: 'message', text: '  hi ann  ' })
  t.match(await a.next(), { type: 'message', nick: 'bob', text: 'hi ann' }, 'ann receives bob (trimmed)')
  t.match(await b.next(), { type: 'message', nick: 'bob', text: 'hi ann' }, 'bob receives his own echo')

  const c = await ChatClient.open(port, 'elsewhere')
  t.teardown(() => c.close())
  await c.join('cat')
  c.send({ type: 'message', text: 'other room' })
  t.match(await c.until('message'), { text: 'other room' })

  await b.close()
  t.same(await a.next(), { type: 'left', nick: 'bob' }, 'leave notice')
  t.same(await a.next(), { type: 'presence', nicks: ['ann'] })
  a.send({ type: 'message', text: 'still here' })
  t.match(await a.next(), { type: 'message', text: 'still here' }, 'no message from the other room leaked in')

  const again = await ChatClient.open(port, 'history')
  t.teardown(() => again.close())
  t.match(await again.join('bob'), { type: 'welcome' }, 'a nickname is free again once its owner left')
})

t.test('configuration from the environment', async (t) => {
  t.same(optionsFromEnv({}), { host: '127.0.0.1', port: 3000, allowedOrigins: undefined, logger: false }, 'embedded defaults')
  t.same(optionsFromEnv({ HOST: '192.168.1.5', PORT: '8080', LOG: '1' }),
    { host: '192.168.1.5', port: 8080, allowedOrigins: undefined, logger: true })
  t.same(defaultOrigins(8080, '192.168.1.5'),
    ['http://127.0.0.1:8080', 'http://localhost:8080', 'http://192.168.1.5:8080'], 'a specific host joins the default allowlist')
  t.same(defaultOrigins(8080, '0.0.0.0'), ['http://127.0.0.1:8080', 'http://localhost:8080'])
  t.same(optionsFromEnv({ PORT: '4000', ORIGINS: 'http://box.lan:4000, https://chat.example ' }).allowedOrigins,
    ['http://127.0.0.1:4000', 'http://localhost:4000', 'http://box.lan:4000', 'https://chat.example'], 'ORIGINS extends the allowlist')
  for (const bad of ['0', '70000', 'abc', '80.5', '-1']) {
    t.throws(() => optionsFromEnv({ PORT: bad }), /invalid PORT/, `PORT=${bad} refused`)
  }
  t.throws(() => buildApp({ port: 0 }), /opts.port/, 'buildApp needs the real port')

  const p = await freePort()
  const lines: string[] = []
  const started = await start(optionsFromEnv({ PORT: String(p), ORIGINS: 'http://box.lan:' + p }), (l) => lines.push(l))
  t.teardown(() => closeApp(started))
  t.same(lines, [
    `example chat listening: open http://127.0.0.1:${p}/`,
    `allowed origins: http://127.0.0.1:${p}, http://localhost:${p}, http://box.lan:${p}`
  ], 'prints the URL to open')
  t.equal((await rawUpgrade(p, '/chat/lobby', { Origin: 'http://box.lan:' + p })).status, 101, 'extra origin accepted')
  t.equal((await rawUpgrade(p, '/chat/lobby', { Origin: 'http://other.lan:' + p })).status, 403, 'others still refused')
})

const distEntry = new URL('../../dist/example-app/server.js', import.meta.url)
t.test('npm start entry point (dist/example-app/server.js)', {
  skip: existsSync(distEntry) ? false : 'not built: run `npm run build` first'
}, async (t) => {
  const entry = distEntry
  const p = await freePort()
  const child = spawn(process.execPath, [entry.pathname], {
    env: { ...process.env, PORT: String(p), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGTERM') })
  let out = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d })
  const deadline = Date.now() + 10_000
  while (!out.includes(`http://127.0.0.1:${p}/`)) {
    if (child.exitCode !== null || Date.now() > deadline) break
    await sleep(50)
  }
  t.match(out, `open http://127.0.0.1:${p}/`, 'prints the URL to open')
  const res = await withTimeout(fetch(`http://127.0.0.1:${p}/`), WAIT, 'GET / (dist)')
  t.equal(res.status, 200, 'serves public/ when run from dist')
  await res.arrayBuffer()
  child.kill('SIGTERM')
  const [code] = await withTimeout(once(child, 'exit'), WAIT, 'child exit') as [number | null]
  t.equal(code, 0, 'exits cleanly on SIGTERM')
})

// ---------------------------------------------------------------------------
// the page, in Chromium

t.test('browser', async (t) => {
  if (!chromiumInstalled(t)) return
  const browser = await launchChromium(t)

  const pageErrors: string[] = []
  async function openPage (ctx?: BrowserContext): Promise<{ ctx: BrowserContext, page: Page }> {
    const c = ctx ?? await browser.newContext({ viewport: { width: 900, height: 560 } })
    const page = await c.newPage()
    page.setDefaultTimeout(WAIT)
    page.on('pageerror', (err) => pageErrors.push(err.message))
    return { ctx: c, page }
  }

  async function joinAs (page: Page, nick: string, room: string, origin = base): Promise<void> {
    await page.goto(`${origin}/?room=${room}`)
    await page.fill('#nick', nick)
    await page.click('#join')
    await page.locator('#status[data-state="open"]').waitFor()
    await page.locator('#chat').waitFor({ state: 'visible' })
  }

  const presence = (page: Page): Promise<string[]> => page.locator('#presence li').allTextContents()
  const lastMessage = (page: Page, text: string) =>
    page.locator('#messages li[data-type="message"]', { hasText: text }).last()

  await t.test('two pages chat in one room', async (t) => {
    const { ctx: ctxA, page: alice } = await openPage()
    t.teardown(() => ctxA.close())
    const { ctx: ctxB, page: bob } = await openPage()
    t.teardown(() => ctxB.close())

    await joinAs(alice, 'alice', 'e2e')
    t.equal(await alice.textContent('#room-label'), 'e2e', 'room shown')
    await joinAs(bob, 'bob', 'e2e', `http://localhost:${port}`) // the other default origin

    await alice.locator('#messages li[data-type="notice"]', { hasText: 'bob joined' }).waitFor()
    t.pass('alice sees "bob joined"')
    await alice.locator('#presence li', { hasText: 'bob' }).waitFor()
    t.same(await presence(alice), ['alice', 'bob'], 'alice sees both present')
    t.same(await presence(bob), ['alice', 'bob'], 'bob sees both present')

    await alice.fill('#text', 'Hello Bob, this is RFC 6455 talking')
    await alice.press('#text', 'Enter')
    const atBob = lastMessage(bob, 'Hello Bob, this is RFC 6455 talking')
    await atBob.waitFor()
    t.equal(await atBob.locator('.nick').textContent(), 'alice', 'bob receives alice\'s message')
    t.equal(await alice.inputValue('#text'), '', 'input cleared after send')

    await bob.fill('#text', 'Hi Alice! Handshake done, frames flowing.')
    await bob.click('#send')
    const atAlice = lastMessage(alice, 'Hi Alice!')
    await atAlice.waitFor()
    t.equal(await atAlice.locator('.nick').textContent(), 'bob', 'alice receives bob\'s message')

    await alice.fill('#text', 'See you!')
    await alice.press('#text', 'Enter')
    await lastMessage(bob, 'See you!').waitFor()

    mkdirSync(ARTIFACTS, { recursive: true })
    await alice.screenshot({ path: SCREENSHOT.pathname })
    // The README's copy changes only on request, so a test run leaves the work tree clean.
    if (process.env.UPDATE_SCREENSHOT === '1') copyFileSync(SCREENSHOT, README_SCREENSHOT)
    t.ok(existsSync(SCREENSHOT), `screenshot written to ${SCREENSHOT.pathname}`)

    await bob.fill('#text', '<b>not bold</b>')
    await bob.press('#text', 'Enter')
    const html = lastMessage(alice, 'not bold')
    await html.waitFor()
    t.equal(await html.locator('.text').textContent(), '<b>not bold</b>', 'text is rendered as text, not HTML')
    t.equal(await alice.locator('#messages b').count(), 0, 'no HTML injected')

    await ctxB.close()
    await alice.locator('#messages li[data-type="notice"]', { hasText: 'bob left' }).waitFor()
    t.pass('alice sees "bob left"')
    await alice.waitForFunction('document.querySelectorAll("#presence li").length === 1')
    t.same(await presence(alice), ['alice'], 'presence updated after leave')

    // A late joiner gets the history.
    const { ctx: ctxC, page: carol } = await openPage()
    t.teardown(() => ctxC.close())
    await joinAs(carol, 'carol', 'e2e')
    await lastMessage(carol, 'not bold').waitFor()
    t.equal(await carol.locator('#messages li.history').count(), 4, 'late joiner sees the history')

    // Nickname taken -> back to the form with the error, no reconnect loop.
    const { ctx: ctxD, page: dup } = await openPage()
    t.teardown(() => ctxD.close())
    await dup.goto(`${base}/?room=e2e`)
    await dup.fill('#nick', 'alice')
    await dup.click('#join')
    await dup.locator('#join-error', { hasText: 'already in this room' }).waitFor()
    t.equal(await dup.getAttribute('#status', 'data-state'), 'idle', 'no reconnect after a fatal join error')
  })

  await t.test('invalid input from the page gets the server\'s error reply', async (t) => {
    const { ctx, page } = await openPage()
    t.teardown(() => ctx.close())

    // The form's own constraints stop these in the page; without them, the route's schema answers.
    await page.goto(`${base}/?room=schema-page`)
    await page.evaluate('document.getElementById("nick").removeAttribute("pattern")')
    await page.fill('#nick', 'has space')
    await page.click('#join')
    await page.locator('#join-error', { hasText: 'nickname must be 1-24 letters' }).waitFor()
    t.pass('a nickname the schema refuses is reported on the join form')
    t.equal(await page.getAttribute('#status', 'data-state'), 'idle', 'and the page does not retry it')

    await joinAs(page, 'valid', 'schema-page')
    await page.evaluate('document.getElementById("text").removeAttribute("maxlength")')
    await page.fill('#text', 'y'.repeat(MAX_TEXT_LENGTH + 1))
    await page.press('#text', 'Enter')
    await page.locator('#messages li[data-type="error"]', { hasText: `text must be 1-${MAX_TEXT_LENGTH} characters` }).waitFor()
    t.pass('an overlong message gets an error notice')
    t.equal(await page.getAttribute('#status', 'data-state'), 'open', 'the connection stays open')
    await page.fill('#text', 'still here after the error')
    await page.press('#text', 'Enter')
    await lastMessage(page, 'still here after the error').waitFor()
    t.pass('and the next message goes through on the same connection')
  })

  await t.test('reconnects after the server restarts', async (t) => {
    const { ctx, page } = await openPage()
    t.teardown(() => ctx.close())
    await joinAs(page, 'phoenix', 'restart')

    await closeApp(app)
    app = undefined
    await page.locator('#status[data-state="reconnecting"], #status[data-state="connecting"]').waitFor()
    t.pass('status shows the connection is lost')
    await sleep(1_500) // let a failed attempt or two go by (backoff grows)

    app = await startApp(port)
    await page.locator('#status[data-state="open"]').waitFor({ timeout: 15_000 })
    t.pass('back online after the restart')
    await page.locator('#presence li', { hasText: 'phoenix' }).waitFor()
    await page.fill('#text', 'I am back')
    await page.press('#text', 'Enter')
    await lastMessage(page, 'I am back').waitFor()
    t.pass('can chat again after reconnecting')
  })

  await t.test('a page from a disallowed origin is refused', async (t) => {
    const evilPage = `<!doctype html><title>evil</title><script>
      window.events = []
      const ws = new WebSocket('ws://127.0.0.1:${port}/chat/lobby', 'chat.v1')
      ws.onopen = () => events.push('open')
      ws.onerror = () => events.push('error')
      ws.onclose = (e) => events.push('close:' + e.code)
    </script>`
    const other = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      res.end(evilPage)
    })
    other.listen(0, '127.0.0.1')
    await withTimeout(once(other, 'listening'), WAIT, 'second server listen')
    t.teardown(() => new Promise<void>((resolve) => { other.closeAllConnections(); other.close(() => resolve()) }))
    const otherPort = (other.address() as AddressInfo).port

    const { ctx, page } = await openPage()
    t.teardown(() => ctx.close())
    await page.goto(`http://127.0.0.1:${otherPort}/`)
    await page.waitForFunction('window.events.some((e) => e.startsWith("close"))')
    const events = await page.evaluate<string[]>('window.events')
    t.notOk(events.includes('open'), 'never opened')
    t.ok(events.includes('error'), 'error event')
    t.ok(events.includes('close:1006'), 'closed abnormally (handshake refused)')
  })

  t.same(pageErrors, [], 'no uncaught errors in the pages')
})
