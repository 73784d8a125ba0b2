// The client in a real browser: the module, as the build emits it, loads unbundled in a page
// (<script type="module">), connects on the page's WebSocket, does requests both ways and receives topic
// messages, survives a connection that silently stops forwarding (liveness) and a server restart (resume).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import type { Page } from 'playwright-core'
import type { FastifyInstance } from 'fastify'
import { within, waitFor } from '../helpers/index.js'
import { startEnvelopeServer, startProxy, type EnvelopeServer } from './envelope-server.js'
import { chromiumInstalled, launchChromium } from '../helpers/chromium.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
t.setTimeout(90_000)
/** The page's global, as the callbacks run in the page see it. */
declare const window: { seen?: { opens: number, closes: Array<[number, string]>, messages: unknown[], gaps: unknown[] }, client: { request (m: unknown): Promise<unknown> } }

/** lib/client/index.ts compiled with the build's options: the file dist/lib/client/index.js holds. */
function clientModule (): string {
  const config = ts.readConfigFile(join(root, 'tsconfig.build.json'), (p) => readFileSync(p, 'utf8'))
  const { options } = ts.parseJsonConfigFileContent(config.config, ts.sys, root)
  return ts.transpileModule(readFileSync(join(root, 'lib/client/index.ts'), 'utf8'), {
    compilerOptions: { ...options, sourceMap: false, declaration: false }, fileName: 'index.mts'
  }).outputText
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>client</title><link rel="icon" href="data:,">
<script type="module">
import { connect } from '/client/index.js'
const client = connect('/env', { liveness: { idle: 300, timeout: 300 }, reconnect: { base: 50, cap: 200 } })
window.client = client
window.seen = { opens: 0, closes: [], messages: [], gaps: [] }
client.on('open', () => { window.seen.opens++ })
client.on('close', (code, reason) => { window.seen.closes.push([code, reason]) })
client.on('message', (m, topic) => { window.seen.messages.push(topic ? [m, topic.topic, topic.offset] : [m]) })
client.on('gap', (gap) => { window.seen.gaps.push(gap) })
client.onRequest((m) => ({ fromPage: m }))
</script>`

function routes (js: string) {
  return (app: FastifyInstance): void => {
    app.get('/', (_req, reply) => { void reply.type('text/html').send(PAGE) })
    app.get('/client/index.js', (_req, reply) => { void reply.type('text/javascript').send(js) })
  }
}

t.test('Chromium: the module loads unbundled, connects, requests both ways, survives a dead connection and a restart', async (t) => {
  if (!chromiumInstalled(t)) return
  const js = clientModule()
  // The page comes through the proxy: its origin names the proxy's port.
  const origins = (origin: string): boolean => /^http:\/\/127\.0\.0\.1:\d+$/.test(origin)
  let server: EnvelopeServer = await startEnvelopeServer({ setup: routes(js), origins })
  const port = server.port
  const proxy = await startProxy(port)
  t.teardown(async () => { await proxy.close(); await server.close() })
  const browser = await launchChromium(t)
  const page: Page = await browser.newPage()
  page.setDefaultTimeout(10_000)
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()) })

  await page.goto(`http://127.0.0.1:${proxy.port}/`)
  await page.waitForFunction(() => window.seen?.opens === 1)
  t.pass('the page connected through the module')

  const reply = await page.evaluate(() => window.client.request({ a: 1 }))
  t.same(reply, { echo: { a: 1 } }, "the page's request got the server's reply")
  t.same(await within(server.request({ x: 1 }), 5000, "the page's reply"), { r: 1, m: { fromPage: { x: 1 } } }, "the server's request got the page's reply")
  server.push({ topic: 'news', epoch: 'e1', offset: 4, data: { headline: 'h' } })
  server.push({ m: 'plain' })
  await page.waitForFunction(() => window.seen?.messages.length === 2)

  // A connection that stops forwarding without closing: the page probes after 300 ms, gives up 300 ms later.
  proxy.freeze()
  await page.waitForFunction(() => window.seen?.opens === 2, undefined, { timeout: 10_000 })
  await waitFor(() => server.resumes.length === 2, 3000, 'the resume frame')
  t.same(server.resumes, [{}, { news: { epoch: 'e1', offset: 4 } }], 'resumed from the last position')

  // A server restart on the same port: the page reconnects and resumes.
  await server.close()
  server = await startEnvelopeServer({ port, setup: routes(js), origins })
  await page.waitForFunction(() => window.seen?.opens === 3, undefined, { timeout: 10_000 })
  await waitFor(() => server.resumes.length > 0, 3000, 'the resume frame after the restart')
  t.same(server.resumes, [{ news: { epoch: 'e1', offset: 4 } }])
  server.push({ gap: { topic: 'news', reason: 'epoch-changed', epoch: 'e2', offset: 0 } })
  await page.waitForFunction(() => window.seen?.gaps.length === 1)

  const seen = (await page.evaluate(() => window.seen))!
  t.same(seen.messages, [[{ headline: 'h' }, 'news', 4], ['plain']])
  t.same(seen.closes[0], [1006, 'No answer to the liveness probe'], 'the dead connection was detected by the probe')
  t.equal(seen.closes.length, 2, 'then the restart')
  t.same(errors.filter((e) => !/WebSocket/.test(e)), [], 'no page error')
})
