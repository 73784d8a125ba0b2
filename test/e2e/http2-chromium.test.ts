// Headless Chromium against an HTTPS/HTTP/2 Fastify app (self-signed certificate made by the test, Chromium started
// with --ignore-certificate-errors): the page, loaded over HTTP/2, opens wss:// WebSockets to its own origin.
// Proven on the server side: each WebSocket arrived as an extended CONNECT stream (HTTP/2, :protocol websocket) on
// the same session as the page, exchanged messages both ways, and closed with the close handshake; a page of
// another origin (localhost) is refused with 403 by the same-origin default; and a page that has no HTTP/2
// connection to the WebSocket's origin yet gets its socket over HTTP/1.1 (the allowHTTP1 path), as the README says.
import t from 'tap'
import type { Http2ServerRequest } from 'node:http2'
import type { FastifyServerOptions } from 'fastify'
import { buildApp, listen, within, waitFor } from '../helpers/index.js'
import { selfSignedCert } from '../helpers/http2-client.js'
import { chromiumInstalled, launchChromium } from '../helpers/chromium.js'

const SOCKETS = 3
const MESSAGES = 5

t.setTimeout(90_000)

const PAGE = `<!doctype html><meta charset="utf-8"><title>h2 ws</title><script>
window.result = (async () => {
  const open = (i) => new Promise((resolve, reject) => {
    const ws = new WebSocket('wss://' + location.host + '/ws?n=' + i, ['echo.v1'])
    ws.binaryType = 'arraybuffer'
    const got = []
    ws.onopen = () => { for (let m = 0; m < ${MESSAGES}; m++) ws.send('socket ' + i + ' message ' + m); ws.send(new Uint8Array([i, 1, 2, 3])); ws.send('z'.repeat(4096) + i) }
    ws.onmessage = (e) => {
      got.push(typeof e.data === 'string' ? e.data : 'binary:' + Array.from(new Uint8Array(e.data)).join(','))
      if (got.length === ${MESSAGES + 2}) ws.close(1000, 'done ' + i)
    }
    ws.onerror = () => reject(new Error('socket ' + i + ' failed'))
    ws.onclose = (e) => resolve({ i, protocol: ws.protocol, extensions: ws.extensions, got, code: e.code, wasClean: e.wasClean })
  })
  const results = []
  for (let i = 0; i < ${SOCKETS}; i++) results.push(open(i))
  return Promise.all(results)
})()
</script>`

interface Seen { httpVersion: string, protocolHeader: unknown, streamId: number | undefined, session: unknown, extensions: string, messages: string[], close: [number, string] | null }

t.test('Chromium opens wss:// WebSockets over HTTP/2 (RFC 8441) to a Fastify app', async (t) => {
  if (!chromiumInstalled(t)) return
  const { key, cert } = selfSignedCert()
  // permessage-deflate on: the 4 KiB message of each socket is compressed both ways (the threshold is 1 KiB).
  const { app, logs } = await buildApp({ perMessageDeflate: true }, { http2: true, https: { key, cert, allowHTTP1: true } } as unknown as FastifyServerOptions)
  app.get('/blank', (_request, reply) => reply.type('text/html; charset=utf-8').send('<!doctype html><title>other origin</title>'))
  const pages: Array<{ httpVersion: string, session: unknown }> = []
  const seen: Seen[] = []
  app.get('/', (request, reply) => {
    const raw = request.raw as unknown as Http2ServerRequest
    pages.push({ httpVersion: raw.httpVersion, session: raw.stream?.session })
    return reply.type('text/html; charset=utf-8').send(PAGE)
  })
  app.get('/ws', { websocket: { protocols: ['echo.v1'] } }, (socket, request) => {
    const raw = request.raw as unknown as Http2ServerRequest
    const entry: Seen = {
      httpVersion: raw.httpVersion,
      protocolHeader: raw.headers[':protocol'],
      streamId: raw.stream?.id,
      extensions: socket.extensions,
      session: raw.stream?.session,
      messages: [],
      close: null
    }
    seen.push(entry)
    socket.on('message', (data, isBinary) => {
      entry.messages.push(isBinary ? `binary:${[...data].join(',')}` : data.toString())
      socket.send(data, { binary: isBinary })
    })
    socket.on('close', (code, reason) => { entry.close = [code, reason] })
  })
  const port = await listen(app)
  t.teardown(() => within(app.close(), 10_000, 'app.close()'))

  const browser = await launchChromium(t, ['--ignore-certificate-errors'])
  const page = await browser.newPage()
  page.setDefaultTimeout(15_000)
  await page.goto(`https://127.0.0.1:${port}/`)
  const results = await within(page.evaluate('window.result') as Promise<Array<{ i: number, protocol: string, extensions: string, got: string[], code: number, wasClean: boolean }>>, 15_000, 'page result')

  t.equal(pages.length >= 1 && pages[0]!.httpVersion, '2.0', 'the page was served over HTTP/2')
  t.equal(results.length, SOCKETS)
  for (const r of results) {
    const expected = [...Array.from({ length: MESSAGES }, (_, m) => `socket ${r.i} message ${m}`), `binary:${r.i},1,2,3`, 'z'.repeat(4096) + r.i]
    t.same(r.got, expected, `socket ${r.i}: every echo, in order`)
    t.equal(r.protocol, 'echo.v1', `socket ${r.i}: subprotocol`)
    t.match(r.extensions, /^permessage-deflate/, `socket ${r.i}: the browser sees permessage-deflate`)
    t.equal(r.code, 1000, `socket ${r.i}: closed with 1000`)
    t.equal(r.wasClean, true, `socket ${r.i}: a clean close`)
  }
  await waitFor(() => seen.length === SOCKETS && seen.every((s) => s.close !== null), 5000, 'server-side closes')
  for (const s of seen) {
    t.equal(s.httpVersion, '2.0', `stream ${s.streamId}: HTTP/2`)
    t.equal(s.protocolHeader, 'websocket', `stream ${s.streamId}: :protocol websocket`)
    t.equal(s.messages.length, MESSAGES + 2, `stream ${s.streamId}: the server received every message`)
    t.match(s.extensions, /^permessage-deflate/, `stream ${s.streamId}: permessage-deflate negotiated over HTTP/2`)
    t.match(s.close, [1000, /^done \d$/], `stream ${s.streamId}: the browser's Close`)
  }
  t.equal(new Set(seen.map((s) => s.streamId)).size, SOCKETS, 'one stream per WebSocket')
  t.ok(seen.every((s) => s.session === pages[0]!.session), 'all on the session that served the page')

  // A page of another origin (localhost instead of 127.0.0.1, same port) is refused by the same-origin default.
  const refusedBefore = logs.find('WebSocket upgrade refused').length
  const other = await browser.newPage()
  await other.goto(`https://localhost:${port}/blank`)
  const outcome = await within(other.evaluate(`new Promise((resolve) => {
    const ws = new WebSocket('wss://127.0.0.1:${port}/ws')
    ws.onopen = () => resolve('open')
    ws.onclose = (e) => resolve('closed ' + e.code)
  })`) as Promise<string>, 15_000, 'cross-origin outcome')
  t.equal(outcome, 'closed 1006', 'the browser sees the handshake fail')
  const refusals = logs.find('WebSocket upgrade refused').slice(refusedBefore)
  t.equal(refusals.length, 1, 'the server refused it once')
  t.equal(refusals[0]?.status, 403)
  t.equal(refusals[0]?.origin, `https://localhost:${port}`)
  t.equal(seen.length, SOCKETS, 'no socket was opened for it')
})

t.test('with no HTTP/2 connection to the origin yet, Chromium opens its WebSocket over HTTP/1.1 (allowHTTP1)', async (t) => {
  if (!chromiumInstalled(t)) return
  const { key, cert } = selfSignedCert()
  const https = { key, cert, allowHTTP1: true }
  // The WebSocket server: HTTP/2 with RFC 8441 advertised, never visited by the page before the socket.
  const { app } = await buildApp({ origins: () => true }, { http2: true, https } as unknown as FastifyServerOptions)
  const versions: string[] = []
  app.get('/ws', { websocket: true }, (socket, request) => {
    versions.push(request.raw.httpVersion)
    socket.on('message', (data) => socket.send(data.toString()))
  })
  const wsPort = await listen(app)
  t.teardown(() => within(app.close(), 10_000, 'app.close()'))
  // The page comes from another origin (another port).
  const { app: pageApp } = await buildApp({}, { http2: true, https } as unknown as FastifyServerOptions)
  pageApp.get('/', (_request, reply) => reply.type('text/html; charset=utf-8').send('<!doctype html><title>page</title>'))
  const pagePort = await listen(pageApp)
  t.teardown(() => within(pageApp.close(), 10_000, 'page app.close()'))

  const browser = await launchChromium(t, ['--ignore-certificate-errors'])
  const page = await browser.newPage()
  await page.goto(`https://127.0.0.1:${pagePort}/`)
  const echo = await within(page.evaluate(`new Promise((resolve, reject) => {
    const ws = new WebSocket('wss://127.0.0.1:${wsPort}/ws')
    ws.onopen = () => ws.send('hi')
    ws.onmessage = (e) => { resolve(e.data); ws.close(1000) }
    ws.onerror = () => reject(new Error('failed'))
  })`) as Promise<string>, 15_000, 'echo')
  t.equal(echo, 'hi')
  t.same(versions, ['1.1'], 'the socket arrived as an HTTP/1.1 upgrade')
})
