// The browser client's size budget: at most 4 KiB minified and gzipped. The module is compiled the way the build
// compiles it (TypeScript with the project's options: dist/lib/client/index.js), then minified by esbuild with the
// Node transport left out (the page never loads it), then gzipped. It must also import nothing statically: a
// page loads it unbundled.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import ts from 'typescript'
import { build } from 'esbuild'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const BUDGET = 4096

t.test('lib/client/index.js: at most 4 KiB minified + gzipped, no static import', async (t) => {
  const source = readFileSync(join(root, 'lib/client/index.ts'), 'utf8')
  const config = ts.readConfigFile(join(root, 'tsconfig.build.json'), (p) => readFileSync(p, 'utf8'))
  const { options } = ts.parseJsonConfigFileContent(config.config, ts.sys, root)
  const js = ts.transpileModule(source, { compilerOptions: { ...options, sourceMap: false, declaration: false }, fileName: 'index.mts' }).outputText
  t.notMatch(js, /^\s*import\s[^(]/m, 'no static import: the page loads the file as it is')
  t.notMatch(js, /\bnode:|\brequire\(|\bprocess\.|\bBuffer\b/, 'nothing of Node')
  t.match(js, "import('./node-transport.js')", 'the Node transport is loaded on demand only')
  t.match(js, /^export (class|function|const) /m, 'an ES module, as the build emits it (package.json "type": "module")')

  const result = await build({
    stdin: { contents: js, resolveDir: join(root, 'lib/client'), sourcefile: 'index.js', loader: 'js' },
    bundle: true, minify: true, format: 'esm', target: 'es2022', platform: 'browser', write: false,
    external: ['./node-transport.js'], logLevel: 'silent'
  })
  const minified = result.outputFiles[0]!.contents
  const gzipped = gzipSync(minified, { level: 9 }).length
  t.comment(`client size: ${js.length} bytes compiled, ${minified.length} minified, ${gzipped} minified + gzipped (budget ${BUDGET})`)
  t.ok(gzipped <= BUDGET, `${gzipped} bytes minified + gzipped ≤ ${BUDGET}`)
})
