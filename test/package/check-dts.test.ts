// scripts/check-dts.js, the published-declarations check, against small hand-written builds: it must flag each
// kind of leak with its file and line, and pass a clean API.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

function build (t: Test, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'check-dts-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'lib'))
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }')
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, 'lib', name), text)
  return dir
}

function check (dist: string): Promise<{ code: number | null, out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(root, 'scripts/check-dts.js'), '--dist', dist], { cwd: root, timeout: 60_000, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, out: stdout.toString() + stderr.toString() }))
  })
}

t.test('flags visible _members, internal types reached from the API, public socket constructors and helpers in errors', async (t) => {
  const dist = build(t, {
    'index.d.ts': "export { Socket } from './socket.js';\nexport { WebSocket } from './websocket.js';\nexport * as errors from './errors.js';\n",
    'socket.d.ts': "import type { Internal } from './internal.js';\nexport declare class Socket {\n  private constructor();\n  private _hidden;\n  _start(): void;\n  get state(): Internal;\n}\n",
    'websocket.d.ts': "import type { ConnectionOptions } from './internal.js';\nexport declare class WebSocket {\n  constructor(options: ConnectionOptions);\n  send(data: string): boolean;\n}\n",
    'internal.d.ts': 'export interface Internal { a: number }\nexport interface ConnectionOptions { b: number }\n',
    'errors.d.ts': 'export declare const FST_WS_BROKEN: ErrorConstructor;\nexport declare function describe(value: unknown): string;\n'
  })
  const { code, out } = await check(dist)
  t.equal(code, 1, 'the check fails')
  t.match(out, /lib\/socket\.d\.ts:5 Socket\._start: a member starting with "_" is visible/)
  t.match(out, /lib\/internal\.d\.ts:1 Internal is not exported from the entry point but is reachable from the public API via Socket/)
  t.match(out, /lib\/websocket\.d\.ts:3 WebSocket: its constructor is public/)
  t.match(out, /lib\/errors\.d\.ts:2 errors\.describe is exported through `errors`/)
  t.notMatch(out, /_hidden/, 'private members are not API')
  t.notMatch(out, /ConnectionOptions/, 'one offence per root cause: the public constructor, not what it mentions')
  t.match(out, /check-dts: 4 offence\(s\)/)
})

t.test('flags declarations that do not compile (a reference to something stripInternal removed)', async (t) => {
  const dist = build(t, {
    'index.d.ts': "export { Socket } from './socket.js';\n",
    'socket.d.ts': 'export declare class Socket {\n  private constructor();\n  send(options: SendOptions): void;\n}\n'
  })
  const { code, out } = await check(dist)
  t.equal(code, 1)
  t.match(out, /lib\/socket\.d\.ts:3 does not compile: Cannot find name 'SendOptions'/)
})

t.test('passes an API that exports everything it mentions', async (t) => {
  const dist = build(t, {
    'index.d.ts': "export { Socket, type Options } from './socket.js';\nexport * as errors from './errors.js';\n",
    'socket.d.ts': 'export interface Options { binary?: boolean }\nexport declare class Socket {\n  private constructor();\n  private _queue;\n  send(data: string, options?: Options): boolean;\n}\n',
    'errors.d.ts': 'export declare const FST_WS_NOT_OPEN: ErrorConstructor;\n'
  })
  const { code, out } = await check(dist)
  t.equal(code, 0, out)
  t.match(out, /check-dts: ok/)
})

t.test('reports a missing build instead of passing', async (t) => {
  const { code, out } = await check(build(t, {}))
  t.equal(code, 1)
  t.match(out, /index\.d\.ts is missing: run `npm run build` first/)
})
