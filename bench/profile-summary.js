// Summarise a V8 .cpuprofile (from `node --cpu-prof`, or `node bench/run.js --profile`):
// top functions by self time and by inclusive time.
//
//   node bench/profile-summary.js /tmp/bench-profiles/plugin-123.cpuprofile [--top=25]
import { readFileSync } from 'node:fs'

const file = process.argv[2]
if (!file) {
  process.stderr.write('usage: node bench/profile-summary.js FILE.cpuprofile [--top=N]\n')
  process.exit(2)
}
const top = Number((process.argv.find((a) => a.startsWith('--top=')) ?? '--top=25').slice(6))
const prof = JSON.parse(readFileSync(file, 'utf8'))

const byId = new Map(prof.nodes.map((n) => [n.id, n]))
const parent = new Map()
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

// Sample counts -> time per node (timeDeltas are in microseconds).
const selfUs = new Map()
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i]
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0))
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0)

function key (n) {
  const f = n.callFrame
  const where = f.url ? `${f.url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules\/|dist\/|bench\/)/, '$1')}:${f.lineNumber + 1}` : ''
  return `${f.functionName || '(anonymous)'} ${where}`.trim()
}

const self = new Map()
const inclusive = new Map()
for (const [id, us] of selfUs) {
  const k = key(byId.get(id))
  self.set(k, (self.get(k) ?? 0) + us)
  // Inclusive: charge every distinct function on the stack once.
  const seen = new Set()
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const kk = key(byId.get(cur))
    if (seen.has(kk)) continue
    seen.add(kk)
    inclusive.set(kk, (inclusive.get(kk) ?? 0) + us)
  }
}

const pct = (us) => (100 * us / total).toFixed(1).padStart(5) + '%'
const print = (title, m) => {
  process.stdout.write(`\n${title}\n`)
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(us)}  ${k}\n`)
}
process.stdout.write(`${file}: ${(total / 1e6).toFixed(2)} s sampled\n`)
print('Self time', self)
print('Inclusive time', inclusive)
