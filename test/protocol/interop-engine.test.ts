/**
 * Interoperability of the engine with independent clients: the ws package and
 * Node's WHATWG WebSocket (undici; on Node 20 behind --experimental-websocket,
 * run in a child process). Text, binary, every length form, fragments, ping/pong
 * and every close path.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WsClient from 'ws'
import { startServer, once, within, delay, type TestServer } from '../helpers/index.js'
import type { WebSocket } from '../../lib/socket/websocket.js'

function echo (s: WebSocket): void {
  s.on('message', (data, isBinary) => s.send(data, { binary: isBinary }))
}

async function open (srv: TestServer): Promise<WsClient> {
  const ws = new WsClient(`ws://127.0.0.1:${srv.port}/ws`, { maxPayload: 64 * 1024 * 1024 })
  ws.on('error', () => {})
  await once(ws, 'open')
  return ws
}

function nextMessage (ws: WsClient, ms = 3000): Promise<[Buffer, boolean]> {
  return once<[Buffer, boolean]>(ws, 'message', ms)
}

function closeOf (ws: WsClient, ms = 3000): Promise<[number, string]> {
  return within(new Promise<[number, string]>((resolve) => {
    ws.once('close', (code: number, reason: Buffer) => resolve([code, reason.toString()]))
  }), ms, 'the ws client to close')
}

t.test('ws client: text and binary with 7-, 16- and 64-bit lengths', async (t) => {
  const srv = await startServer({ maxPayload: 8 * 1024 * 1024 }, echo)
  t.teardown(srv.close)
  const ws = await open(srv)
  t.teardown(() => ws.terminate())
  for (const size of [0, 1, 125, 126, 127, 65535, 65536, 1024 * 1024 + 3]) {
    const text = 'ü'.repeat(size >> 1) + (size % 2 === 1 ? 'a' : '')
    ws.send(text)
    const [data, isBinary] = await nextMessage(ws)
    t.equal(isBinary, false)
    t.ok(data.toString() === text, `text of ${Buffer.byteLength(text)} bytes echoed`)
    const bin = Buffer.alloc(size)
    for (let i = 0; i < size; i++) bin[i] = (i * 31) & 0xff
    ws.send(bin)
    const [back, isBin] = await nextMessage(ws)
    t.equal(isBin, true)
    t.ok(back.equals(bin), `binary of ${size} bytes echoed`)
  }
})

t.test('ws client: fragmented messages with pings between fragments', async (t) => {
  const srv = await startServer({}, echo)
  t.teardown(srv.close)
  const ws = await open(srv)
  t.teardown(() => ws.terminate())
  const server = await srv.socket()
  const pings: string[] = []
  server.on('ping', (d) => pings.push(d.toString()))
  const pongs: string[] = []
  ws.on('pong', (d: Buffer) => pongs.push(d.toString()))
  ws.send('frag', { fin: false })
  ws.ping('between')
  ws.send('men', { fin: false })
  ws.ping('')
  ws.send('ted ✓', { fin: true })
  const [data, isBinary] = await nextMessage(ws)
  t.equal(data.toString(), 'fragmented ✓')
  t.equal(isBinary, false)
  ws.send(Buffer.from([1, 2]), { fin: false, binary: true })
  ws.send(Buffer.alloc(70000, 3), { fin: false, binary: true })
  ws.send(Buffer.from([4]), { fin: true, binary: true })
  const [bin, isBin] = await nextMessage(ws)
  t.equal(isBin, true)
  t.equal(bin.length, 70003)
  t.same([bin[0], bin[1], bin[2], bin[70002]], [1, 2, 3, 4])
  t.same(pings, ['between', ''])
  t.same(pongs, ['between', ''], 'each ping answered with its payload')
})

t.test('ws client: ping/pong both ways', async (t) => {
  const srv = await startServer({}, echo)
  t.teardown(srv.close)
  const ws = await open(srv)
  t.teardown(() => ws.terminate())
  const server = await srv.socket()
  const pong = once<[Buffer]>(ws, 'pong')
  ws.ping(Buffer.alloc(125, 0x61))
  t.equal((await pong)[0].toString(), 'a'.repeat(125))
  const serverPong = once<[Buffer]>(server, 'pong')
  const clientPing = once<[Buffer]>(ws, 'ping')
  server.ping('from server')
  t.equal((await clientPing)[0].toString(), 'from server')
  t.equal((await serverPong)[0].toString(), 'from server')
  const unsolicited = once<[Buffer]>(server, 'pong')
  ws.pong('unasked')
  t.equal((await unsolicited)[0].toString(), 'unasked')
  ws.send('still open')
  t.equal((await nextMessage(ws))[0].toString(), 'still open')
})

t.test('ws client: every close path', async (t) => {
  const srv = await startServer({ maxPayload: 1000, closeTimeout: 500 }, echo)
  t.teardown(srv.close)

  // The client closes.
  let ws = await open(srv)
  let server = await srv.socket(0)
  let sc = once<[number, string]>(server, 'close')
  let cc = closeOf(ws)
  ws.close(4000, 'client bye')
  t.same(await sc, [4000, 'client bye'], 'client close: server sees code and reason')
  t.same(await cc, [4000, ''], 'client close: the echo carries the code')

  // The server closes.
  ws = await open(srv)
  server = await srv.socket(1)
  sc = once<[number, string]>(server, 'close')
  cc = closeOf(ws)
  server.close(1001, 'going away')
  t.same(await cc, [1001, 'going away'], 'server close: client sees code and reason')
  t.equal((await sc)[0], 1001, 'server close: the server sees the echoed code (ws echoes the reason too)')

  // Close without a status code.
  ws = await open(srv)
  server = await srv.socket(2)
  sc = once<[number, string]>(server, 'close')
  cc = closeOf(ws)
  ws.close()
  t.same(await sc, [1005, ''])
  t.same(await cc, [1005, ''])

  // The server terminates.
  ws = await open(srv)
  server = await srv.socket(3)
  cc = closeOf(ws)
  server.terminate()
  t.same(await cc, [1006, ''], 'terminate: abnormal closure for the client')

  // The client terminates.
  ws = await open(srv)
  server = await srv.socket(4)
  sc = once<[number, string]>(server, 'close')
  ws.terminate()
  t.same(await sc, [1006, ''], 'client terminate: abnormal closure for the server')

  // Message too big: 1009.
  ws = await open(srv)
  server = await srv.socket(5)
  cc = closeOf(ws)
  ws.send(Buffer.alloc(1001))
  t.equal((await cc)[0], 1009, 'too big: the client gets 1009')

  // Invalid UTF-8 in a text message: 1007.
  ws = await open(srv)
  server = await srv.socket(6)
  cc = closeOf(ws)
  ws.send(Buffer.from([0xce, 0xba, 0xed, 0xa0, 0x80]), { binary: false })
  t.equal((await cc)[0], 1007, 'invalid UTF-8: the client gets 1007')

  // Invalid UTF-8 in a fragment, before the message ends.
  ws = await open(srv)
  server = await srv.socket(7)
  cc = closeOf(ws)
  ws.send(Buffer.from('ok'), { binary: false, fin: false })
  ws.send(Buffer.from([0xf4, 0x90]), { binary: false, fin: false })
  t.equal((await cc)[0], 1007, 'invalid fragment: 1007 without the final fragment')

  // The handler's listener throws: 1011.
  const srv2 = await startServer({}, (s) => { s.on('message', () => { throw new Error('oops') }) })
  t.teardown(srv2.close)
  ws = await open(srv2)
  cc = closeOf(ws)
  ws.send('boom')
  t.equal((await cc)[0], 1011, 'listener failure: 1011')
})

t.test('ws client: the server sends many messages and the client reads them all', async (t) => {
  const srv = await startServer({}, (s) => {
    for (let i = 0; i < 1000; i++) s.send(i % 2 === 0 ? `m${i}` : Buffer.from(`b${i}`))
    s.close(1000, 'all sent')
  })
  t.teardown(srv.close)
  const ws = new WsClient(`ws://127.0.0.1:${srv.port}/ws`)
  ws.on('error', () => {})
  const got: string[] = []
  ws.on('message', (d: Buffer, isBinary: boolean) => got.push((isBinary ? 'B' : 'T') + d.toString()))
  const [code, reason] = await closeOf(ws)
  t.equal(got.length, 1000)
  t.equal(got[0], 'Tm0')
  t.equal(got[999], 'Bb999')
  t.same([code, reason], [1000, 'all sent'])
})

/** Run a script in a child Node with the WHATWG WebSocket; resolves with its JSON output. */
function runWhatwg (script: string, args: string[], ms: number): Promise<{ code: number | null, out: string, err: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'rfc6455-whatwg-'))
  const file = join(dir, 'client.mjs')
  writeFileSync(file, script)
  const flags = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-websocket', '--no-warnings'] : []
  const child = spawn(process.execPath, [...flags, file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const done = new Promise<{ code: number | null, out: string, err: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, out, err }))
  })
  return within(done, ms, 'the WHATWG client process').finally(() => {
    child.kill()
    rmSync(dir, { recursive: true, force: true })
  })
}

const WHATWG_CLIENT = `
const [port, mode] = process.argv.slice(2)
const ws = new WebSocket('ws://127.0.0.1:' + port + '/ws')
ws.binaryType = 'arraybuffer'
const log = []
const big = 'x'.repeat(65536)
ws.onopen = () => {
  if (mode === 'server-closes') return
  ws.send('hello ✓')
  ws.send(new Uint8Array([1, 2, 3]))
  ws.send(big)
  ws.send(new Uint8Array(70000).fill(9))
  ws.send('')
}
ws.onmessage = (ev) => {
  if (typeof ev.data === 'string') log.push(['text', ev.data.length > 100 ? ev.data.length : ev.data])
  else log.push(['binary', ev.data.byteLength, new Uint8Array(ev.data)[0] ?? null])
  if (log.length === 5) ws.close(4000, 'done')
}
ws.onerror = () => log.push(['error'])
ws.onclose = (ev) => {
  log.push(['close', ev.code, ev.reason, ev.wasClean])
  process.stdout.write(JSON.stringify(log), () => process.exit(0))
}
setTimeout(() => { process.stdout.write(JSON.stringify(log.concat([['timeout']]))); process.exit(1) }, 4000)
`

const probe = await runWhatwg('process.stdout.write(typeof WebSocket)', [], 10000).catch(() => null)
const noWhatwg = probe === null || probe.out !== 'function'
  ? `no WHATWG WebSocket in this Node (${process.version}), even with --experimental-websocket`
  : false

t.test('Node WHATWG WebSocket client', { skip: noWhatwg }, async (t) => {
  const srv = await startServer({}, (s) => {
    echo(s)
    if (srv.sockets.length === 2) setTimeout(() => s.close(4001, 'server done'), 20)
  })
  t.teardown(srv.close)
  const r = await runWhatwg(WHATWG_CLIENT, [String(srv.port), 'echo'], 8000)
  t.equal(r.code, 0, r.err)
  t.same(JSON.parse(r.out), [
    ['text', 'hello ✓'], ['binary', 3, 1], ['text', 65536], ['binary', 70000, 9], ['text', ''],
    ['close', 4000, '', true]
  ], 'echoes, then a clean close initiated by the client')
  const server = srv.sockets[0]!
  t.equal(server.readyState, server.CLOSED)

  const r2 = await runWhatwg(WHATWG_CLIENT, [String(srv.port), 'server-closes'], 8000)
  t.same(JSON.parse(r2.out), [['close', 4001, 'server done', true]], 'a clean close initiated by the server')
  await delay(10)
})
