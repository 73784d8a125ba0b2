// Memory bounds in RSS: what a hostile or stalled peer can make one server process hold, measured in a server
// process of its own (so the client's buffers are not counted), against a settled baseline.
//
//   npm run build && node bench/memory-bounds.js        (about 30 s; prints a table, writes bench/.tmp/memory-bounds.json)
//
// Scenarios (each in a fresh server process):
//   held      - a handler that never consumes; the peer sends 1-byte messages, each behind ~64 KiB of pongs, so
//               that every message arrives in a read chunk of its own (the case where a held view pins a chunk)
//   backlog   - permessage-deflate on; the peer pipelines 1 KiB compressed messages faster than they inflate
//   announced - 200 sockets that each announce a 1 MiB frame and send 5 bytes of it
//   topics    - one socket subscribed to maxTopicsPerSocket (1,000) topics of maxTopicLength (256) characters
import { fork } from 'node:child_process'
import { connect } from 'node:net'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync, existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const HERE = dirname(fileURLToPath(import.meta.url))
const MiB = 1024 * 1024
const mib = (n) => (n / MiB).toFixed(1) + ' MiB'


// ---- server process ----
async function server () {
  const { default: Fastify } = await import('fastify')
  const { default: websocket } = await import('../dist/lib/index.js')
  const scenario = process.argv[3]
  const app = Fastify()
  await app.register(websocket, { ports: 'any', perMessageDeflate: scenario === 'backlog' })
  let peakRss = 0
  setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss) }, 20).unref()
  app.get('/ws', { websocket: true }, (socket) => {
    if (scenario === 'backlog') socket.on('message', () => {})
    if (scenario === 'topics') {
      socket.once('message', () => {
        for (let i = 0; i < 1000; i++) socket.subscribe(String(i).padStart(256, 't'))
        socket.send('subscribed')
      })
    }
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const settle = async () => {
    for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((resolve) => setTimeout(resolve, 30)) }
    return process.memoryUsage()
  }
  const baseline = await settle()
  peakRss = baseline.rss
  process.on('message', async (msg) => {
    if (msg === 'measure') {
      const now = await settle()
      process.send({ baseline, now, peakRss })
    }
  })
  process.send({ port: app.server.address().port })
}

// ---- client ----
function frame (opcode, payload, rsv1 = false) {
  const len = payload.length
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8
  const out = Buffer.alloc(2 + ext + 4 + len)
  out[0] = 0x80 | (rsv1 ? 0x40 : 0) | opcode
  out[1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127)
  if (ext === 2) out.writeUInt16BE(len, 2)
  if (ext === 8) out.writeBigUInt64BE(BigInt(len), 2)
  const key = randomBytes(4)
  key.copy(out, 2 + ext)
  for (let i = 0; i < len; i++) out[2 + ext + 4 + i] = payload[i] ^ key[i & 3]
  return out
}

function upgrade (port, extensions) {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.on('error', () => {})
    let head = Buffer.alloc(0)
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.removeListener('data', onData)
      if (!head.subarray(0, 12).toString().includes('101')) reject(new Error(head.toString()))
      else resolve(socket)
    }
    socket.on('data', onData)
    socket.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
      (extensions ? `Sec-WebSocket-Extensions: ${extensions}\r\n` : '') + '\r\n')
  })
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function pump (socket, chunk, ms) {
  const end = Date.now() + ms
  while (Date.now() < end && !socket.destroyed) {
    if (!socket.write(chunk)) {
      let onDrain
      await Promise.race([new Promise((resolve) => { onDrain = resolve; socket.once('drain', resolve) }), delay(200)])
      socket.removeListener('drain', onDrain)
    }
    if (socket.writableLength > 16 * MiB) await delay(100)
  }
}

const SCENARIOS = {
  async held (port) {
    const socket = await upgrade(port)
    const pongs = Buffer.concat(Array.from({ length: 500 }, () => frame(0xa, Buffer.alloc(125))))
    await pump(socket, Buffer.concat([pongs, frame(0x1, Buffer.from('x'))]), 6000)
    return [socket]
  },
  async backlog (port) {
    const socket = await upgrade(port, 'permessage-deflate')
    const data = randomBytes(1024)
    const stored = Buffer.alloc(5 + data.length + 1)
    stored.writeUInt16LE(data.length, 1)
    stored.writeUInt16LE(~data.length & 0xffff, 3)
    data.copy(stored, 5)
    const burst = Buffer.concat(Array.from({ length: 64 }, () => frame(0x2, stored, true)))
    await pump(socket, burst, 6000)
    return [socket]
  },
  async announced (port) {
    const sockets = []
    const header = Buffer.alloc(14)
    header[0] = 0x82
    header[1] = 0x80 | 127
    header.writeUInt32BE(MiB, 6)
    for (let i = 0; i < 200; i++) {
      const socket = await upgrade(port)
      socket.write(Buffer.concat([header, Buffer.alloc(5)]))
      sockets.push(socket)
    }
    await delay(500)
    return sockets
  },
  async topics (port) {
    const socket = await upgrade(port)
    const reply = new Promise((resolve) => socket.once('data', resolve))
    socket.write(frame(0x1, Buffer.from('go')))
    await reply
    return [socket]
  }
}

async function main () {
  if (!existsSync(join(HERE, '..', 'dist', 'lib', 'index.js'))) {
    process.stderr.write('memory-bounds.js: run `npm run build` first\n')
    process.exit(2)
  }
  const results = {}
  for (const name of Object.keys(SCENARIOS)) {
    const child = fork(fileURLToPath(import.meta.url), ['server', name], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const { port } = await new Promise((resolve) => child.once('message', resolve))
    const sockets = await SCENARIOS[name](port)
    const measured = new Promise((resolve) => child.once('message', resolve))
    child.send('measure')
    const { baseline, now, peakRss } = await measured
    results[name] = {
      rssGrowth: now.rss - baseline.rss,
      peakRssGrowth: peakRss - baseline.rss,
      heapGrowth: now.heapUsed - baseline.heapUsed,
      arrayBuffersGrowth: now.arrayBuffers - baseline.arrayBuffers
    }
    for (const s of sockets) s.destroy()
    child.kill()
    const r = results[name]
    process.stdout.write(`${name.padEnd(10)} RSS ${mib(r.rssGrowth).padStart(10)} (peak ${mib(r.peakRssGrowth)})  heap ${mib(r.heapGrowth).padStart(9)}  arrayBuffers ${mib(r.arrayBuffersGrowth).padStart(9)}\n`)
  }
  mkdirSync(join(HERE, '.tmp'), { recursive: true })
  writeFileSync(join(HERE, '.tmp', 'memory-bounds.json'), JSON.stringify({ node: process.version, date: new Date().toISOString(), results }, null, 2))
}

if (process.argv[2] === 'server') await server()
else await main()
