// The test command: typecheck (including the type tests in types/), lint, the published-declarations
// check (scripts/check-dts.js), tap with coverage (fails under 95% of lines), then one plain closing
// line "N passed, N failed": tap's assertion counts plus one for each of the typecheck, lint,
// declarations and coverage checks.
import { spawnSync } from 'node:child_process'
import { readFileSync, existsSync, rmSync } from 'node:fs'

const MIN_LINE_COVERAGE = 95
let passed = 0
let failed = 0

function step (name, cmd, args, env = {}) {
  process.stdout.write(`\n== ${name}: ${cmd} ${args.join(' ')}\n`)
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 1 << 28 })
  process.stdout.write(r.stdout ?? '')
  return { ok: r.status === 0, out: r.stdout ?? '' }
}

const typecheck = step('typecheck', 'npx', ['tsc', '-p', 'tsconfig.json', '--noEmit'])
if (typecheck.ok) passed++; else failed++
const lint = step('lint', 'npx', ['eslint', '--max-warnings=0', '.'])
if (lint.ok) passed++; else failed++
const dts = step('declarations', 'node', ['scripts/check-dts.js'])
if (dts.ok) passed++; else failed++

const summaryFile = '.tap/report/coverage-summary.json'
rmSync(summaryFile, { force: true })
const tap = step('tap', 'npx', ['tap', '--reporter=tap', '--allow-incomplete-coverage',
  '--coverage-report=text-summary', '--coverage-report=json-summary',
  ...(process.argv.length > 2 ? process.argv.slice(2) : ['test/**/*.test.ts'])], { FORCE_COLOR: '0' })
// tap's own closing summary counts every assertion: "# { total: N, pass: N, fail: N, todo: N, skip: N }".
const summaries = [...tap.out.matchAll(/^# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/gm)]
const last = summaries.at(-1)
const tapPassed = last ? Number(last[2]) : 0
const tapFailed = last ? Number(last[3] ?? 0) : 0
passed += tapPassed
failed += tapFailed
// A file that died or timed out may not show up as a failed assertion: count it once.
if (!tap.ok && tapFailed === 0) failed++

if (existsSync(summaryFile)) {
  const pct = JSON.parse(readFileSync(summaryFile, 'utf8')).total.lines.pct
  const ok = pct >= MIN_LINE_COVERAGE
  process.stdout.write(`\n== coverage: ${pct}% of lines (minimum ${MIN_LINE_COVERAGE}%) ${ok ? 'ok' : 'FAILED'}\n`)
  if (ok) passed++; else failed++
} else if (process.argv.length <= 2) {
  process.stdout.write('\n== coverage: no summary written: FAILED\n')
  failed++
}

process.stdout.write(`\n${passed} passed, ${failed} failed\n`)
process.exit(failed === 0 ? 0 : 1)
