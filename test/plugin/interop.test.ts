// Interoperability with real clients: the `ws` package, and the WHATWG WebSocket (undici) that Node ships.
// Node 20 exposes globalThis.WebSocket only behind --experimental-websocket, so that client runs in a child process.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import type { IncomingMessage } from 'node:http'
import WebSocketClient from 'ws'
import type { WebSocket } from '../../lib/index.js'
import { buildApp, listen, within, waitFor } from '../helpers/index.js'

interface ServerLog { messages: Array<{ data: string, isBinary: boolean }>, closes: Array<[number, string]>, protocols: string[] }

async function echoServer (t: Test) {
  const { app } = await buildApp()
  const log: ServerLog = { messages: [], closes: [], protocols: [] }
  const handler = (socket: WebSocket) => {
    log.protocols.push(socket.protocol)
    socket.on('message', (data, isBinary) => {
      log.messages.push({ data: isBinary ? data.toString('hex') : data.toString(), isBinary })
      if (!isBinary && data.toString() === 'close me') {
        socket.close(4002, 'server bye')
        return
      }
      socket.send(data, { binary: isBinary })
    })
    socket.on('close', (code, reason) => log.closes.push([code, reason]))
  }
  app.get('/echo', { websocket: { protocols: ['superchat', 'chat'] } }, handler)
  const port = await listen(app)
  t.teardown(() => app.close())
  return { app, port, log }
}

function openClient (url: string, protocols?: string[]): Promise<WebSocketClient> {
  const client = new WebSocketClient(url, protocols)
  return within(new Promise<WebSocketClient>((resolve, reject) => {
    client.once('open', () => resolve(client))
    client.once('error', reject)
  }), 3000, 'ws client open')
}

function nextClientMessage (client: WebSocketClient): Promise<{ data: Buffer, isBinary: boolean }> {
  return within(new Promise((resolve) => client.once('message', (data: Buffer, isBinary: boolean) => resolve({ data, isBinary }))), 3000, 'ws message')
}

function clientClose (client: WebSocketClient): Promise<[number, string]> {
  return within(new Promise((resolve) => client.once('close', (code: number, reason: Buffer) => resolve([code, reason.toString()]))), 3000, 'ws close')
}

function until (check: () => boolean, what: string): Promise<void> {
  return waitFor(check, 3000, what, 5)
}

t.test('ws client', async (t) => {
  const { port, log } = await echoServer(t)
  const url = `ws://127.0.0.1:${port}/echo`

  t.test('text, binary and large messages', async (t) => {
    const client = await openClient(url)
    t.teardown(() => client.terminate())
    client.send('héllo wörld')
    const text = await nextClientMessage(client)
    t.equal(text.data.toString(), 'héllo wörld')
    t.equal(text.isBinary, false)
    client.send(Buffer.from([0, 1, 2, 255]))
    const bin = await nextClientMessage(client)
    t.same([...bin.data], [0, 1, 2, 255])
    t.equal(bin.isBinary, true)
    for (const size of [125, 126, 65535, 65536, 300_000]) {
      const payload = Buffer.alloc(size, size % 251)
      client.send(payload)
      const echoed = await nextClientMessage(client)
      t.equal(echoed.data.length, size, `${size} bytes`)
      t.ok(echoed.data.equals(payload))
    }
    client.send('empty next')
    await nextClientMessage(client)
    client.send('')
    t.equal((await nextClientMessage(client)).data.length, 0, 'an empty text message')
  })

  t.test('protocol negotiation', async (t) => {
    const a = await openClient(url, ['chat', 'superchat'])
    t.teardown(() => a.terminate())
    t.equal(a.protocol, 'superchat', 'server preference')
    const b = await openClient(url, ['chat'])
    t.teardown(() => b.terminate())
    t.equal(b.protocol, 'chat')
    await until(() => log.protocols.includes('chat'), 'server protocol')
    t.ok(log.protocols.includes('superchat'))
    const refused = new WebSocketClient(url, ['mqtt'])
    const status = await within(new Promise<number>((resolve) => {
      refused.once('unexpected-response', (_req: unknown, res: IncomingMessage) => { resolve(res.statusCode ?? 0); res.resume() })
    }), 3000, 'unexpected-response')
    refused.on('error', () => {})
    refused.terminate()
    t.equal(status, 400, 'nothing acceptable')
  })

  t.test('close codes: client to server', async (t) => {
    const client = await openClient(url)
    const done = clientClose(client)
    client.close(4000, 'client bye')
    const [code] = await done
    t.equal(code, 4000, 'the server echoed the code')
    await until(() => log.closes.some(([c]) => c === 4000), 'server close event')
    t.ok(log.closes.some(([c, r]) => c === 4000 && r === 'client bye'), 'the server saw code and reason')
  })

  t.test('close codes: server to client', async (t) => {
    const client = await openClient(url)
    const done = clientClose(client)
    client.send('close me')
    t.same(await done, [4002, 'server bye'])
    await until(() => log.closes.some(([c]) => c === 4002), 'server close event')
  })

  t.test('ping from the client is answered', async (t) => {
    const client = await openClient(url)
    t.teardown(() => client.terminate())
    const pong = within(new Promise<string>((resolve) => client.once('pong', (d: Buffer) => resolve(d.toString()))), 3000, 'pong')
    client.ping('are you there')
    t.equal(await pong, 'are you there')
  })
})

t.test('server ping reaches a ws client, and its pong comes back', async (t) => {
  const { app } = await buildApp()
  const pongs: string[] = []
  app.get('/ping', { websocket: true }, (socket) => {
    socket.on('pong', (d) => pongs.push(d.toString()))
    socket.ping('srv')
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  const client = new WebSocketClient(`ws://127.0.0.1:${port}/ping`)
  t.teardown(() => client.terminate())
  const ping = await within(new Promise<string>((resolve) => client.once('ping', (d: Buffer) => resolve(d.toString()))), 3000, 'ping')
  t.equal(ping, 'srv')
  await until(() => pongs.length > 0, 'pong')
  t.same(pongs, ['srv'])
})

// The WHATWG client, in a child process with --experimental-websocket when this Node lacks the global.
const CHILD = `
const [url, mode] = process.argv.slice(-2)
const events = []
const ws = new WebSocket(url, ['chat', 'superchat'])
ws.binaryType = 'arraybuffer'
const timer = setTimeout(() => { console.log(JSON.stringify({ events, timeout: true })); process.exit(2) }, 5000)
ws.onopen = () => {
  events.push({ open: ws.protocol })
  ws.send('text from whatwg')
  ws.send(new Uint8Array([1, 2, 3]))
}
let received = 0
ws.onmessage = (e) => {
  events.push(typeof e.data === 'string' ? { text: e.data } : { binary: Array.from(new Uint8Array(e.data)) })
  if (++received === 2) {
    if (mode === 'client-closes') ws.close(4000, 'whatwg bye')
    else ws.send('close me')
  }
}
ws.onerror = (e) => events.push({ error: String(e.message ?? e.type) })
ws.onclose = (e) => {
  events.push({ close: e.code, reason: e.reason, wasClean: e.wasClean })
  clearTimeout(timer)
  console.log(JSON.stringify({ events }))
}
`

function runWhatwg (url: string, mode: string): Promise<{ events: Array<Record<string, unknown>>, timeout?: boolean }> {
  const args = typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'function' ? [] : ['--experimental-websocket']
  return within(new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args, '--no-warnings', '-e', CHILD, url, mode], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    child.stderr.on('data', (c: Buffer) => { err += c.toString() })
    child.on('error', reject)
    child.on('close', () => {
      try {
        resolve(JSON.parse(out.trim()) as { events: Array<Record<string, unknown>> })
      } catch {
        reject(new Error(`child output not JSON: ${out} ${err}`))
      }
    })
  }), 10_000, 'WHATWG WebSocket child process')
}

function whatwgAvailable (): boolean {
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'function') return true
  const major = Number(process.versions.node.split('.')[0])
  return major >= 20 // Node 20.10+ / 21 ship it behind --experimental-websocket; 22+ by default
}

t.test('WHATWG WebSocket', { skip: whatwgAvailable() ? false : 'this Node has no WHATWG WebSocket client' }, async (t) => {
  const { port, log } = await echoServer(t)
  const url = `ws://127.0.0.1:${port}/echo`

  t.test('text, binary, protocol, client-initiated close', async (t) => {
    const { events, timeout } = await runWhatwg(url, 'client-closes')
    t.notOk(timeout, 'finished')
    t.same(events, [
      { open: 'superchat' },
      { text: 'text from whatwg' },
      { binary: [1, 2, 3] },
      { close: 4000, reason: '', wasClean: true }
    ], 'the server echoed 4000 and closed cleanly')
    await until(() => log.closes.some(([c, r]) => c === 4000 && r === 'whatwg bye'), 'server saw 4000')
    t.ok(log.messages.some((m) => m.data === 'text from whatwg' && !m.isBinary))
    t.ok(log.messages.some((m) => m.data === '010203' && m.isBinary))
  })

  t.test('server-initiated close', async (t) => {
    const { events } = await runWhatwg(url, 'server-closes')
    t.same(events.at(-1), { close: 4002, reason: 'server bye', wasClean: true })
  })
})
