// `npm run soak`: the heavy variants of the hostile-input, fault and load tests. It runs the same test files as
// CI with larger counts (environment variables read by the tests) and a longer tap timeout, under a raised
// file-descriptor limit: 10,000 idle connections need 10,000 descriptors in the server process (the clients run
// in a child process with their own). Each file runs on its own; the script ends with "N passed, N failed".
import { spawnSync } from 'node:child_process'

const runs = [
  {
    file: 'test/plugin/load.test.ts',
    env: { FST_WS_LOAD_CONNECTIONS: '10000', FST_WS_ECHO_CLIENTS: '500', FST_WS_ECHO_MESSAGES: '2000', FST_WS_CLOSE_CLIENTS: '3000' }
  },
  { file: 'test/protocol/fuzz.test.ts', env: { FST_WS_FUZZ_ITERATIONS: '50000', FST_WS_FUZZ_BUDGET_MS: '120000', FST_WS_FUZZ_SEED: String(Date.now() & 0x7fffffff) } },
  { file: 'test/protocol/hostile-frames.test.ts', env: {} },
  { file: 'test/plugin/hostile-handshake.test.ts', env: {} },
  { file: 'test/plugin/faults.test.ts', env: {} },
  { file: 'test/http/origin-bypass.test.ts', env: {} }
]

let passed = 0
let failed = 0
for (const { file, env } of runs) {
  const vars = Object.entries({ FST_WS_SOAK: '1', ...env }).map(([k, v]) => `${k}=${v}`).join(' ')
  process.stdout.write(`\n== soak: ${file} ${vars}\n`)
  // Raise the descriptor limit as far as the hard limit allows (65536 where permitted).
  const command = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; echo "fd limit: $(ulimit -n)"; ' +
    `exec npx tap --disable-coverage --timeout=900 --reporter=terse ${file}`
  const started = Date.now()
  const r = spawnSync('bash', ['-c', command], { stdio: 'inherit', env: { ...process.env, FST_WS_SOAK: '1', ...env } })
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  if (r.status === 0) {
    passed++
    process.stdout.write(`== ${file}: ok (${seconds} s)\n`)
  } else {
    failed++
    process.stdout.write(`== ${file}: FAILED (${seconds} s)\n`)
  }
}
process.stdout.write(`\n${passed} passed, ${failed} failed\n`)
process.exit(failed === 0 ? 0 : 1)
