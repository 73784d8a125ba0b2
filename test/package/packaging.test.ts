// The package as npm publishes it: what `npm pack` ships, how it loads from ESM and from CommonJS
// (require(esm), Node >= 20.19), its licence and metadata, and source maps that resolve.
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, posix, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  name: string, license: string, main: string, types: string, files: string[],
  exports: Record<string, Record<string, string> | string>,
  repository?: { type: string, url: string }, homepage?: string, bugs?: { url: string }
}

interface Run { code: number | null, stdout: string, stderr: string }
function run (cmd: string, args: string[], cwd: string, ms = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout: ms, killSignal: 'SIGKILL', maxBuffer: 1 << 26, env: { ...process.env, NODE_OPTIONS: '' } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null
        resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() })
      })
  })
}

// .ci/run builds before the tests; build here only when dist is missing (tsc emits even with type errors elsewhere).
if (!existsSync(join(root, 'dist/lib/index.js'))) {
  const build = await run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], root, 300_000)
  if (!existsSync(join(root, 'dist/lib/index.js'))) throw new Error(`build failed:\n${build.stdout}${build.stderr}`)
}

/** A scratch project whose node_modules holds this package (by its published name) and fastify. */
function consumer (): string {
  const dir = mkdtempSync(join(tmpdir(), 'rfc6455-consumer-'))
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(root, join(dir, 'node_modules', pkg.name), 'dir')
  symlinkSync(join(root, 'node_modules/fastify'), join(dir, 'node_modules/fastify'), 'dir')
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true }))
  return dir
}

t.test('require() from CommonJS loads the ESM build and registers on a Fastify app', async (t) => {
  const dir = consumer()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'main.cjs'), `
'use strict'
const { once } = require('node:events')
const websocket = require('${pkg.name}')
const Fastify = require('fastify')
async function main () {
  const app = Fastify()
  try {
    await app.register(websocket, { ports: 'any' })          // Fastify unwraps the namespace's .default
    app.get('/echo', { websocket: { protocols: ['chat.v1'] } }, (socket) => {
      socket.on('message', (data) => socket.send('echo:' + data.toString()))
    })
    const client = await app.injectWS('/echo', { protocols: ['chat.v1'] })
    client.send('hi')
    const [reply] = await once(client, 'message')
    let refused = null
    try { await app.injectWS('/nowhere') } catch (err) { refused = err }
    console.log(JSON.stringify({
      keys: Object.keys(websocket).sort(),
      defaultIsPlugin: typeof websocket.default === 'function' && websocket.default === websocket.fastifyWebSocket,
      reply: reply.toString(),
      protocol: client.protocol,
      refusedIsClass: refused instanceof websocket.HandshakeRejectedError,
      refusedStatus: refused && refused.statusCode,
      errorKeys: Object.keys(websocket.errors).length
    }))
    client.terminate()
  } finally {
    await app.close()
  }
}
main().catch((err) => { console.error(err); process.exitCode = 1 })
`)
  const r = await run(process.execPath, ['main.cjs'], dir, 60_000)
  t.equal(r.code, 0, `require() works (stderr: ${r.stderr.split('\n').slice(0, 3).join(' | ')})`)
  if (r.code !== 0) return
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>
  t.ok(out.defaultIsPlugin, 'require(...).default is the plugin')
  t.same(out.reply, 'echo:hi', 'the plugin registered through require() serves a WebSocket route')
  t.equal(out.protocol, 'chat.v1')
  t.ok(out.refusedIsClass, 'named exports are on the required object (HandshakeRejectedError)')
  t.equal(out.refusedStatus, 404)
  t.ok((out.errorKeys as number) > 10, 'errors is on the required object')
  t.ok((out.keys as string[]).includes('webSocketRoute'), 'webSocketRoute is on the required object')
})

t.test('the module graph has no top-level await (require(esm) would throw ERR_REQUIRE_ASYNC_MODULE)', async (t) => {
  const r = await run(process.execPath, ['-e', `
    try { require(${JSON.stringify(root)}); console.log('sync') }
    catch (err) { console.log(err.code); process.exitCode = 1 }`], tmpdir(), 30_000)
  t.equal(r.stdout.trim(), 'sync', 'the whole graph behind the entry point loads synchronously')
})

t.test('import from ESM', async (t) => {
  const dir = consumer()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'main.mjs'), `
import websocket, { errors, WebSocket, webSocketRoute, HandshakeRejectedError } from '${pkg.name}'
console.log(JSON.stringify([typeof websocket, typeof errors.FST_WS_NOT_OPEN, typeof WebSocket, typeof webSocketRoute, typeof HandshakeRejectedError]))
`)
  const r = await run(process.execPath, ['main.mjs'], dir, 30_000)
  t.equal(r.code, 0, r.stderr)
  t.same(JSON.parse(r.stdout.trim() || '[]'), ['function', 'function', 'function', 'function', 'function'])
})

t.test('package.json: exports for import, require and types; licence and repository metadata', async (t) => {
  const main = pkg.exports['.']
  t.type(main, 'object')
  if (typeof main !== 'object') return
  t.equal(main.types, './dist/lib/index.d.ts', 'types come first')
  t.equal(Object.keys(main)[0], 'types', 'the types condition is listed first, as TypeScript requires')
  t.equal(main.default, './dist/lib/index.js', 'one ESM build for every condition, import and require alike')
  t.equal(pkg.license, 'MIT')
  t.match(pkg.repository, { type: 'git', url: /^git\+https:\/\/github\.com\/[\w.-]+\/fastify-rfc6455\.git$/ })
  t.match(pkg.homepage, /^https:\/\/github\.com\/[\w.-]+\/fastify-rfc6455#readme$/)
  t.match(pkg.bugs, { url: /^https:\/\/github\.com\/[\w.-]+\/fastify-rfc6455\/issues$/ })
  const license = readFileSync(join(root, 'LICENSE'), 'utf8')
  t.match(license, /^MIT License/, 'the MIT licence text')
  t.match(license, /Copyright \(c\) \d{4} fastify-rfc6455 contributors/)
  t.match(license, /THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND/)
})

t.test('npm pack ships the entry points, the licence, and source maps whose sources resolve', async (t) => {
  const r = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], root, 120_000)
  t.equal(r.code, 0, r.stderr)
  const [packed] = JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>
  const files = new Set(packed?.files.map((f) => f.path) ?? [])
  for (const required of ['package.json', 'README.md', 'LICENSE', 'dist/lib/index.js', 'dist/lib/index.d.ts']) {
    t.ok(files.has(required), `${required} is packed`)
  }
  for (const target of [pkg.main, pkg.types, ...Object.values(pkg.exports).flatMap((e) => typeof e === 'string' ? [e] : Object.values(e))]) {
    t.ok(files.has(posix.normalize(target)), `${target} (from package.json) is packed`)
  }
  t.notOk([...files].some((f) => f.startsWith('dist/example-app') || f.startsWith('test/') || f.startsWith('bench/')), 'nothing but the library')
  const stale = [...files].filter((f) => f.endsWith('.js') && !existsSync(join(root, f.replace(/^dist\//, '').replace(/\.js$/, '.ts'))))
  t.same(stale, [], 'no stale build output: every packed .js has its source (npm run build empties dist first)')

  const maps = [...files].filter((f) => f.endsWith('.js.map'))
  t.ok(maps.length > 0, 'source maps are shipped')
  let unresolved = 0
  for (const map of maps) {
    const { sources, sourcesContent } = JSON.parse(readFileSync(join(root, map), 'utf8')) as { sources: string[], sourcesContent?: Array<string | null> }
    sources.forEach((source, i) => {
      const inlined = typeof sourcesContent?.[i] === 'string'
      const packedPath = posix.normalize(posix.join(posix.dirname(map), source))
      if (!inlined && !files.has(packedPath)) {
        unresolved++
        t.fail(`${map}: source ${source} is neither inlined nor packed`)
      }
    })
  }
  t.equal(unresolved, 0, `every source of ${maps.length} source maps resolves inside the package`)
})
