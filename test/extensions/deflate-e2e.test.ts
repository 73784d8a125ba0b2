// permessage-deflate end to end: real peers (the ws client with compression on, and headless Chromium)
// negotiate the extension with the plugin and exchange compressed messages; the byte counts of the
// server's TCP socket prove the payloads crossed the wire compressed, in both directions.
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import WS from 'ws'
import type { WebSocket, PerMessageDeflateOptions } from '../../lib/index.js'
import { buildApp, listen, within } from '../helpers/index.js'
import { chromiumInstalled, launchChromium } from '../helpers/chromium.js'

t.setTimeout(90_000)

interface Server {
  app: FastifyInstance
  port: number
  sockets: WebSocket[]
  closes: Array<[number, string]>
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>deflate</title><script>
window.run = (url) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url)
  ws.binaryType = 'arraybuffer'
  const sent = []
  const got = []
  ws.onerror = () => reject(new Error('websocket error'))
  ws.onopen = () => {
    for (let i = 0; i < 20; i++) {
      const text = ('message ' + i + ' ').repeat(400)
      sent.push(text)
      ws.send(text)
    }
    const bin = new Uint8Array(30000).fill(7)
    ws.send(bin)
    ws.send('small')
  }
  ws.onmessage = (e) => {
    got.push(typeof e.data === 'string' ? e.data : 'binary:' + e.data.byteLength + ':' + new Uint8Array(e.data)[100])
    if (got.length === 22) {
      const same = sent.every((s, i) => got[i] === s)
      ws.close(1000, 'done')
      ws.onclose = (c) => resolve({ extensions: ws.extensions, same, tail: got.slice(20), code: c.code })
    }
  }
})
</script>`

async function startServer (t: Test, deflate: boolean | PerMessageDeflateOptions, maxPayload = 1024 * 1024): Promise<Server> {
  const { app } = await buildApp({ origins: () => true, perMessageDeflate: deflate, maxPayload })
  const sockets: WebSocket[] = []
  const closes: Array<[number, string]> = []
  app.get('/', (_request, reply) => { reply.type('text/html').send(PAGE) })
  app.get('/echo', { websocket: true }, (socket) => {
    sockets.push(socket)
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    socket.on('close', (code, reason) => closes.push([code, reason]))
  })
  const port = await listen(app)
  t.teardown(() => app.close())
  return { app, port, sockets, closes }
}

function openWs (t: Test, port: number, options: WS.ClientOptions): Promise<WS> {
  const ws = new WS(`ws://127.0.0.1:${port}/echo`, options)
  t.teardown(() => ws.terminate())
  return within(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  }), 5000, 'ws open')
}

function echo (ws: WS, data: string | Buffer): Promise<{ data: Buffer, isBinary: boolean }> {
  return within(new Promise((resolve) => {
    ws.once('message', (d, isBinary) => resolve({ data: d as Buffer, isBinary }))
    ws.send(data)
  }), 5000, 'echo')
}

const COMBINATIONS: Array<[string, PerMessageDeflateOptions, WS.PerMessageDeflateOptions]> = [
  ['defaults, context takeover both ways', {}, {}],
  ['server_no_context_takeover', { serverNoContextTakeover: true }, {}],
  ['client_no_context_takeover requested by the client', {}, { clientNoContextTakeover: true }],
  ['small windows (server 10, client 9)', { serverMaxWindowBits: 10, clientMaxWindowBits: 9 }, { clientMaxWindowBits: 9 }]
]

for (const [name, serverOptions, clientOptions] of COMBINATIONS) {
  t.test(`ws client with compression on: ${name}`, async (t) => {
    const s = await startServer(t, { threshold: 64, ...serverOptions })
    const ws = await openWs(t, s.port, { perMessageDeflate: { threshold: 0, ...clientOptions } })
    t.match(ws.extensions, /permessage-deflate/, 'the client sees the extension negotiated')
    t.match(s.sockets[0]!.extensions, /^permessage-deflate/, 'socket.extensions on the server names it')

    const raw = s.sockets[0]!.rawSocket as import('node:net').Socket
    const readBefore = raw.bytesRead
    const writtenBefore = raw.bytesWritten
    let total = 0
    for (let i = 0; i < 30; i++) {
      const text = `{"seq":${i},"body":"${'lorem ipsum dolor sit amet '.repeat(40)}"}`
      total += Buffer.byteLength(text)
      const reply = await echo(ws, text)
      t.equal(reply.isBinary, false)
      if (reply.data.toString() !== text) t.fail(`message ${i} came back different`)
    }
    const binary = Buffer.alloc(200_000, 3)
    const back = await echo(ws, binary)
    t.equal(back.isBinary, true, 'binary stays binary')
    t.ok(back.data.equals(binary), '200 KB binary message intact')
    total += binary.length
    const small = await echo(ws, 'tiny')
    t.equal(small.data.toString(), 'tiny', 'a message under the threshold goes uncompressed and intact')
    total += 4
    const read = raw.bytesRead - readBefore
    const written = raw.bytesWritten - writtenBefore
    t.ok(read < total / 5, `client->server compressed on the wire: ${read} bytes for ${total} bytes of messages`)
    t.ok(written < total / 5, `server->client compressed on the wire: ${written} bytes for ${total} bytes of messages`)

    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
    ws.close(1000, 'bye')
    t.equal(await within(closed, 5000, 'close'), 1000, 'clean close')
  })
}

t.test('a client that does not offer compression is served uncompressed', async (t) => {
  const s = await startServer(t, true)
  const ws = await openWs(t, s.port, { perMessageDeflate: false })
  t.equal(ws.extensions, '', 'no extension negotiated')
  t.equal(s.sockets[0]!.extensions, '')
  const text = 'x'.repeat(5000)
  t.equal((await echo(ws, text)).data.toString(), text)
})

t.test('compression off on the server: an offering client gets no extension', async (t) => {
  const s = await startServer(t, false)
  const ws = await openWs(t, s.port, { perMessageDeflate: true })
  t.equal(ws.extensions, '', 'the offer is declined')
  t.equal((await echo(ws, 'y'.repeat(3000))).data.toString(), 'y'.repeat(3000))
})

t.test('a compressed message that would inflate past maxPayload closes with 1009', async (t) => {
  const s = await startServer(t, true, 64 * 1024)
  const ws = await openWs(t, s.port, { perMessageDeflate: { threshold: 0 } })
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  ws.send(Buffer.alloc(2 * 1024 * 1024)) // 2 MiB of zeros: about 2 KB on the wire
  t.equal(await within(closed, 5000, 'close after the bomb'), 1009, 'the client is told 1009')
  await within(new Promise<void>((resolve) => {
    const check = (): void => { if (s.closes.length > 0) resolve(); else setTimeout(check, 10) }
    check()
  }), 5000, 'server close event')
  t.equal(s.closes[0]![0], 1009, 'the server socket closed with 1009')
})

t.test('headless Chromium negotiates permessage-deflate and exchanges compressed messages', async (t) => {
  if (!chromiumInstalled(t)) return
  const s = await startServer(t, { threshold: 256 })
  const browser = await launchChromium(t)
  const page = await browser.newPage()
  await page.goto(`http://127.0.0.1:${s.port}/`)
  const result = await within(page.evaluate(async (url) => {
    const run = (globalThis as unknown as { run: (u: string) => Promise<{ extensions: string, same: boolean, tail: string[], code: number }> }).run
    return await run(url)
  }, `ws://127.0.0.1:${s.port}/echo`), 20_000, 'page exchange')
  t.match(result.extensions, /permessage-deflate/, `the browser negotiated: ${result.extensions}`)
  t.equal(result.same, true, 'twenty 4 KB text messages came back identical')
  t.same(result.tail, ['binary:30000:7', 'small'], 'binary and a small message too')
  t.equal(result.code, 1000, 'clean close')
  const raw = s.sockets[0]!.rawSocket as import('node:net').Socket
  const total = 20 * 4000 + 30000
  t.ok(raw.bytesRead < total / 5, `browser->server compressed on the wire: ${raw.bytesRead} bytes read`)
  t.ok(raw.bytesWritten < total / 5, `server->browser compressed on the wire: ${raw.bytesWritten} bytes written`)
  t.equal(s.sockets[0]!.extensions.startsWith('permessage-deflate'), true)
})
