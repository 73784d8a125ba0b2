// Reports of the cluster benchmark and soak: the "Cluster-wide topics (Redis)" section of RESULTS.md (written
// between markers, the rest of the file untouched) and two charts drawn from the numbers: cluster.svg
// (deliveries/s and p99 per system) and cluster-soak.svg (server RSS per connection at each step).
//   node bench/cluster-report.js [dir]   rebuild both and the section (bench/RESULTS.md, or CLUSTER.md in bench/.tmp)
//                                        from dir/cluster-results.json and dir/soak-cluster-results.json
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { fmtNum } from './cluster-common.js'

const BEGIN = '<!-- cluster-topics:begin (written by bench/cluster-report.js) -->'
const END = '<!-- cluster-topics:end -->'
const NAMES = { 'plugin-redis': 'this plugin, RedisTopics', socketio: 'socket.io 4.8 + redis-adapter', 'plugin-memory': 'this plugin, in-memory broker' }

function esc (s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

const QUIET = 0.5

function median (xs) {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2
}

const ms = (us) => (Number.isFinite(us) ? (us / 1000).toFixed(us < 10_000 ? 2 : us < 100_000 ? 1 : 0) : '–')
const kib = (b) => (Number.isFinite(b) ? `${(b / 1024).toFixed(2)} KiB` : '–')
const fix = (v, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : '–')

function readJson (file) {
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : null
}

/** Horizontal bar groups: [{ title, unit, better, bars: [{ label, value, color }] }], linear axis per group. */
function barsSvg (title, subtitle, groups) {
  const W = 900
  const left = 250
  const right = 110
  const barH = 18
  let H = 60
  for (const g of groups) H += 26 + g.bars.length * (barH + 4) + 8
  H += 10
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${W / 2}" y="38" text-anchor="middle" fill="#555">${esc(subtitle)}</text>`]
  let y = 56
  for (const g of groups) {
    out.push(`<text x="8" y="${y + 12}" font-weight="bold">${esc(g.title)} (${esc(g.unit)}, ${g.better} is better)</text>`)
    y += 22
    const max = Math.max(...g.bars.map((b) => (Number.isFinite(b.value) ? b.value : 0)), 1e-9)
    for (const b of g.bars) {
      const w = Number.isFinite(b.value) ? Math.max(1, b.value / max * (W - left - right)) : 0
      out.push(`<text x="${left - 8}" y="${y + 13}" text-anchor="end" fill="#333">${esc(b.label)}</text>`)
      if (w > 0) out.push(`<rect x="${left}" y="${y + 2}" width="${w.toFixed(1)}" height="${barH - 4}" fill="${b.color}"/>`)
      out.push(`<text x="${left + w + 6}" y="${y + 13}" fill="#000">${esc(b.text ?? fmtNum(b.value))}</text>`)
      y += barH + 4
    }
    y += 8
  }
  out.push('</svg>')
  return out.join('\n') + '\n'
}

const COLORS = { 'plugin-redis': '#2e9e4f', socketio: '#d0453a', 'plugin-memory': '#1f4fb4' }

export function writeClusterSvg (results, file) {
  const c = results.summary.cluster
  const s = results.summary.single
  const cfg = results.config
  // Latency at the fixed rate from the separate --latency run when there is one (more rounds).
  const lat = readJson(join(file, '..', 'cluster-latency-results.json'))
  const latNote = lat ? ` (--latency run, median of ${lat.config.rounds})` : ''
  const groups = [
    { title: `3 instances × ${cfg.subscribers} subscribers, burst of ${cfg.burst} publishes: deliveries/s`, unit: 'deliveries/s', better: 'higher', key: ['cluster', 'max', 'deliveriesPerSec'] },
    { title: `3 instances × ${cfg.subscribers} subscribers, ${cfg.rate} publishes/s: p99 latency${latNote}`, unit: 'µs', better: 'lower', key: ['cluster', 'rate', 'p99'], lat: true },
    { title: `3 instances × ${cfg.subscribers} subscribers, ${cfg.rate} publishes/s: p50 latency${latNote}`, unit: 'µs', better: 'lower', key: ['cluster', 'rate', 'p50'], lat: true },
    { title: `3 instances × ${cfg.subscribers} subscribers, burst: server + redis CPU per delivery`, unit: 'µs', better: 'lower', key: ['cluster', 'max', 'serverCpuUsPerDelivery'] },
    { title: `1 instance × ${cfg.subscribers} subscribers, burst: deliveries/s`, unit: 'deliveries/s', better: 'higher', key: ['single', 'max', 'deliveriesPerSec'] }
  ].map((g) => {
    const table = g.key[0] === 'cluster' ? (g.lat && lat ? lat.summary.cluster : c) : s
    return {
      ...g,
      bars: Object.keys(table).map((sys) => {
        const value = table[sys][g.key[1]][g.key[2]]
        return { label: NAMES[sys] ?? sys, value, color: COLORS[sys] ?? '#888', text: g.unit === 'µs' ? (value >= 1000 ? `${(value / 1000).toFixed(1)} ms` : `${value.toFixed(2)} µs`) : undefined }
      })
    }
  })
  const m = results.machine
  writeFileSync(file, barsSvg('Cluster-wide topics on Redis: fan-out', `${m.cpu}, ${m.cores} cores, Node ${m.node}, Redis ${m.redis}; median of ${cfg.rounds} round(s), ${results.date.slice(0, 10)}`, groups))
}

export function writeSoakSvg (soak, file) {
  const steps = soak.steps.filter((st) => Number.isFinite(st.rssPerConnection))
  const groups = [
    { title: 'Server RSS per connection (servers summed, minus their baseline, after GC)', unit: 'bytes', better: 'lower', bars: steps.map((st) => ({ label: `${fmtNum(st.connections)} connections`, value: st.rssPerConnection, text: `${(st.rssPerConnection / 1024).toFixed(2)} KiB`, color: '#2e9e4f' })) },
    { title: 'Marginal server RSS per connection (since the previous step)', unit: 'bytes', better: 'lower', bars: steps.map((st) => ({ label: `${fmtNum(st.connections)} connections`, value: st.marginalRssPerConnection, text: `${(st.marginalRssPerConnection / 1024).toFixed(2)} KiB`, color: '#7a4fb4' })) },
    { title: 'Heap per connection (servers summed, after GC)', unit: 'bytes', better: 'lower', bars: steps.map((st) => ({ label: `${fmtNum(st.connections)} connections`, value: st.heapPerConnection, text: `${(st.heapPerConnection / 1024).toFixed(2)} KiB`, color: '#1f4fb4' })) }
  ]
  const m = soak.machine
  writeFileSync(file, barsSvg(`Cluster soak: ${soak.config.servers} server processes on one Redis`, `${m.cpu}, ${m.cores} cores, Node ${m.node}, Redis ${m.redis}; ${soak.date.slice(0, 10)}`, groups))
}

function latencyLines (r) {
  const L = []
  const cfg = r.config
  L.push(`#### Latency at ${cfg.rate} publishes/s, separate run (\`node bench/cluster.js --latency\`)`, '')
  L.push(`Run ${r.date} (${cfg.rounds} rounds, ${r.elapsedSeconds} s, plugin build ${r.machine.pluginBuild.sha1}): the **rate** phase above alone, ` +
    `${cfg.instances} instances × ${cfg.subscribers} subscribers, systems alternating (order reversed every other round). Each row is one round.`, '')
  L.push('| Round | System | p50 ms | p99 ms | p99.9 ms | Server CPU µs/delivery | Other load (cores) |', '|---|---|---|---|---|---|---|')
  const runs = r.runs.cluster
  for (let i = 0; i < cfg.rounds; i++) {
    for (const sys of Object.keys(runs)) {
      const v = runs[sys][i]?.rate
      if (!v) continue
      L.push(`| ${i + 1} | ${NAMES[sys] ?? sys} | ${ms(v.p50)} | ${ms(v.p99)} | ${ms(v.p999)} | ${fix(v.serverCpuUsPerDelivery)} | ${fix(v.otherCpuSeconds / v.seconds)} |`)
    }
  }
  for (const sys of Object.keys(runs)) {
    const v = r.summary.cluster[sys].rate
    L.push(`| median | ${NAMES[sys] ?? sys} | ${ms(v.p50)} | ${ms(v.p99)} | ${ms(v.p999)} | ${fix(v.serverCpuUsPerDelivery)} | ${fix(v.otherCores)} |`)
  }
  const pr = r.summary.cluster['plugin-redis']?.rate
  const io = r.summary.cluster.socketio?.rate
  if (pr && io) {
    L.push('', `Median over all rounds, p99 RedisTopics ÷ socket.io: ${(pr.p99 / io.p99).toFixed(2)} (goal < 1: ${pr.p99 < io.p99 ? 'PASS' : 'FAIL'}); p50: ${(pr.p50 / io.p50).toFixed(2)}.`)
    // The rounds other work on the machine left alone (under QUIET cores of other load during the phase).
    const quiet = (sys) => runs[sys].map((x) => x.rate).filter((v) => v && v.otherCpuSeconds / v.seconds < QUIET)
    const qp = quiet('plugin-redis')
    const qi = quiet('socketio')
    if (qp.length > 0 && qi.length > 0) {
      const med = (vs, k) => median(vs.map((v) => v[k]))
      L.push(`Quiet rounds only (other load under ${QUIET} cores: ${qp.length} of this plugin, ${qi.length} of socket.io): ` +
        `p50 ${ms(med(qp, 'p50'))} ms vs ${ms(med(qi, 'p50'))} ms, p99 ${ms(med(qp, 'p99'))} ms vs ${ms(med(qi, 'p99'))} ms, ` +
        `p99 ratio ${(med(qp, 'p99') / med(qi, 'p99')).toFixed(2)}.`)
    }
  }
  L.push('')
  return L
}

function clusterLines (r, lat) {
  const L = []
  const c = r.summary.cluster
  const s = r.summary.single
  const cfg = r.config
  const m = r.machine
  L.push(`### Fan-out across instances (\`npm run bench:cluster\`)`, '')
  L.push(`Run ${r.date} (${r.mode} mode, ${cfg.rounds} round(s), ${r.elapsedSeconds} s) on ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ` +
    `redis-server ${m.redis} (started by the script, \`--save '' --appendonly no\`), plugin build ${m.pluginBuild.sha1} (dist/lib of ${m.pluginBuild.builtAt}), ` +
    `socket.io ${m.versions['socket.io']}, @socket.io/redis-adapter ${m.versions['@socket.io/redis-adapter']}, ioredis ${m.versions.ioredis}.`, '')
  L.push(`Setup: ${cfg.instances} server processes (one port each) × ${cfg.subscribers} subscribers of one topic; one load-generator process per server ` +
    `holds its ${cfg.subscribers} raw WebSocket clients; ${m.pinning}. Payload ${cfg.size} bytes of text starting with its send time ` +
    '(`t=<µs>` on CLOCK_MONOTONIC, the clock every process of the machine shares), from which the clients compute publish-to-delivery latency. ' +
    `**rate**: ${cfg.rate} publishes/s in total (${cfg.rate * cfg.instances * cfg.subscribers} deliveries/s), open loop for ${cfg.rateSeconds} s, each server publishing its third. ` +
    `**max**: a burst of ${cfg.burst} publishes (each server its third, ${cfg.chunk} per event-loop turn, nobody waits), deliveries/s = deliveries ÷ (last delivery − first publish). ` +
    'This plugin: `app.websocketServer.publish(topic, payload)` with `new RedisTopics({ client })` (defaults: history 100, envelope none); ' +
    'socket.io: `io.to(room).emit("m", payload)`, websocket transport only. Every run checked that every subscriber got every message.', '')
  const all = [c, s].flatMap((t) => Object.values(t).flatMap((phases) => Object.values(phases)))
  const has999 = all.some((v) => Number.isFinite(v.p999))
  L.push(`| System | Phase | Deliveries/s (median) | Spread | p50 ms | p99 ms |${has999 ? ' p99.9 ms |' : ''} Server CPU µs/delivery | Client CPU µs/delivery | Other load (cores) | All delivered |`,
    `|---|---|---|---|---|---|${has999 ? '---|' : ''}---|---|---|---|`)
  for (const [table, label] of [[c, `${cfg.instances} instances`], [s, '1 instance']]) {
    for (const [sys, phases] of Object.entries(table)) {
      for (const [ph, v] of Object.entries(phases)) {
        L.push(`| ${NAMES[sys] ?? sys}, ${label} | ${ph} | ${fmtNum(v.deliveriesPerSec)} | ${fmtNum(v.min)}–${fmtNum(v.max)} | ${ms(v.p50)} | ${ms(v.p99)} |${has999 ? ` ${ms(v.p999)} |` : ''} ` +
          `${fix(v.serverCpuUsPerDelivery)} | ${fix(v.clientCpuUsPerDelivery)} | ${fix(v.otherCores)} | ${v.complete ? 'yes' : 'NO'} |`)
      }
    }
  }
  L.push('')
  L.push('Server CPU per delivery: CPU time of the server processes and redis-server during the phase ÷ deliveries; it is the ' +
    'least noise-sensitive column. Other load: CPU used by processes outside the benchmark (other work on the machine) during the phase, ' +
    'in cores (the machine has 2); latencies and rates of a phase with other load near 1 or more are disturbed.', '')
  const pr = c['plugin-redis']
  const io = c.socketio
  const dr = pr.max.deliveriesPerSec / io.max.deliveriesPerSec
  const p99r = pr.rate.p99 / io.rate.p99
  const cost = s['plugin-redis'].max.deliveriesPerSec / s['plugin-memory'].max.deliveriesPerSec
  L.push('| Ratio | Value | Goal (issue 11) |', '|---|---|---|')
  L.push(`| deliveries/s at max rate, RedisTopics ÷ socket.io | ${dr.toFixed(2)}x | ≥ 3x: ${dr >= 3 ? 'PASS' : 'FAIL'} |`)
  L.push(`| p99 at ${cfg.rate}/s, RedisTopics ÷ socket.io | ${p99r.toFixed(2)} | < 1: ${p99r < 1 ? 'PASS' : 'FAIL'} |`)
  L.push(`| p99 at max rate, RedisTopics ÷ socket.io | ${(pr.max.p99 / io.max.p99).toFixed(2)} | (queueing of the burst) |`)
  L.push(`| single instance, deliveries/s at max rate, RedisTopics ÷ in-memory | ${cost.toFixed(2)} | (the cost of the Redis broker) |`)
  L.push(`| single instance, server CPU per delivery at max rate, RedisTopics ÷ in-memory | ${(s['plugin-redis'].max.serverCpuUsPerDelivery / s['plugin-memory'].max.serverCpuUsPerDelivery).toFixed(2)} | |`)
  L.push(`| single instance, p50 at ${cfg.rate}/s, RedisTopics − in-memory | ${ms(s['plugin-redis'].rate.p50 - s['plugin-memory'].rate.p50)} ms | (the Redis round trip) |`)
  L.push(`| server CPU per delivery at max rate, RedisTopics ÷ socket.io (3 instances) | ${(pr.max.serverCpuUsPerDelivery / io.max.serverCpuUsPerDelivery).toFixed(2)} | |`)
  L.push('', '![cluster fan-out](cluster.svg)', '')
  if (lat) L.push(...latencyLines(lat))
  return L
}

function soakLines (k) {
  const L = []
  const cfg = k.config
  const m = k.machine
  L.push('### Scale soak (`npm run soak:cluster`)', '')
  L.push(`Run ${k.date} (${k.elapsedSeconds} s) on ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, redis-server ${m.redis}, plugin build ${m.pluginBuild.sha1}. ` +
    `Limits: \`ulimit -n\` ${m.nofile} per process (hard ${m.nofileHard}), ephemeral ports ${m.portRange}. ` +
    `${cfg.servers} server processes (one port each, RedisTopics on one redis-server) and ${cfg.clients} load-generator processes (raw WebSocket clients, each spread over every server port), ` +
    'all clients subscribed to one topic. RSS: the server processes\' RSS summed after a full GC, minus the same sum before any connection.', '')
  L.push('| Open WebSockets | Server RSS − baseline | RSS per connection | Marginal RSS per connection (since previous step) | Heap per connection | Connect time (this step) | Server CPU of the step | Load-generator RSS |',
    '|---|---|---|---|---|---|---|---|')
  for (const st of k.steps) {
    L.push(`| ${fmtNum(st.connections)} | ${(st.rssDelta / 2 ** 20).toFixed(1)} MiB | ${kib(st.rssPerConnection)} | ${kib(st.marginalRssPerConnection)} | ${kib(st.heapPerConnection)} | ` +
      `${(st.connectMs / 1000).toFixed(1)} s | ${st.connectCpu ? st.connectCpu.servers.toFixed(1) + ' s' : '–'} | ${(st.clientRss / 2 ** 20).toFixed(0)} MiB |`)
  }
  L.push('')
  const presence = k.steps.map((st, i) => {
    const e = (st.connectRedis ?? []).find((x) => x.command === 'evalsha')
    const added = st.connections - (i > 0 ? k.steps[i - 1].connections : 0)
    return e ? `${fmtNum(added)} new subscriptions: ${fmtNum(e.calls)} script calls (${(e.calls / added).toFixed(2)} per subscription), ${(e.usec / 1e6).toFixed(2)} s of Redis time` : null
  }).filter(Boolean)
  if (presence.length > 0) {
    L.push(`Redis while connecting (INFO commandstats; the subscriptions' presence writes, one EVALSHA of the presence script each, HSET + PEXPIRE + HGETALL inside): ${presence.join('; ')}.`, '')
  }
  if (k.publish) {
    const p = k.publish
    L.push(`Publishing to all ${fmtNum(p.subscribers)} subscribers: ${p.messages} messages from one instance (${p.rateText}): ${p.delivered}/${p.expected} delivered, ` +
      `${fmtNum(p.deliveriesPerSec)} deliveries/s, publish-to-delivery p50 ${ms(p.p50)} ms, p99 ${ms(p.p99)} ms (latency of a burst: message k waits for the k − 1 before it on every socket)` +
      (p.cpuSeconds ? `; CPU meanwhile: servers ${p.cpuSeconds.servers} s, load generators ${p.cpuSeconds.clients} s, redis ${p.cpuSeconds.redis} s, other processes ${p.cpuSeconds.other} s.` : '.'), '')
  }
  if (k.close) {
    L.push(`Closing everything: every server's \`app.close()\` at once (Close 1001 to each socket, the clients answer, the server ends the TCP connection): ` +
      `${(k.close.ms / 1000).toFixed(2)} s for the slowest server, all client sockets closed after ${(k.close.allClosedMs / 1000).toFixed(2)} s, ${k.close.leftOpen} left open` +
      (k.close.cpuSeconds ? `; CPU meanwhile: servers ${k.close.cpuSeconds.servers.toFixed(2)} s, load generators ${k.close.cpuSeconds.clients} s, other processes ${k.close.cpuSeconds.other} s.` : '.'), '')
  }
  if (k.limits) L.push(k.limits, '')
  L.push('![cluster soak](cluster-soak.svg)', '')
  return L
}

/** Rewrite the section of `file` (appended when absent) from dir/cluster-results.json and dir/soak-cluster-results.json. */
export function writeClusterSection (_results, file) {
  const dir = join(file, '..')
  const bench = readJson(join(dir, 'cluster-results.json'))
  const soak = readJson(join(dir, 'soak-cluster-results.json'))
  const lat = readJson(join(dir, 'cluster-latency-results.json'))
  const L = [BEGIN, '## Cluster-wide topics (Redis)', '',
    'Issue 11\'s measurements, made by `bench/cluster.js` and `scripts/soak-cluster.js`, not by `bench/run.js`. `bench/run.js` rewrites this ' +
    'whole file and drops this section; `node bench/cluster-report.js` puts it back from `cluster-results.json` and `soak-cluster-results.json`.', '']
  if (bench) L.push(...clusterLines(bench, lat))
  else if (lat) L.push(...latencyLines(lat))
  if (soak) L.push(...soakLines(soak))
  L.push(END)
  const text = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const a = text.indexOf(BEGIN)
  const b = text.indexOf(END)
  const next = a !== -1 && b > a
    ? text.slice(0, a) + L.join('\n') + text.slice(b + END.length)
    : text.replace(/\n*$/, '\n\n') + L.join('\n') + '\n'
  writeFileSync(file, next)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2] ?? join(fileURLToPath(import.meta.url), '..')
  const bench = readJson(join(dir, 'cluster-results.json'))
  const soak = readJson(join(dir, 'soak-cluster-results.json'))
  if (bench) writeClusterSvg(bench, join(dir, 'cluster.svg'))
  if (soak) writeSoakSvg(soak, join(dir, 'cluster-soak.svg'))
  // bench/ holds the real RESULTS.md; a scratch dir (bench/.tmp of --quick runs) gets CLUSTER.md.
  writeClusterSection(null, join(dir, dir.replace(/\/+$/, '').endsWith('.tmp') ? 'CLUSTER.md' : 'RESULTS.md'))
}
