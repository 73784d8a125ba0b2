// Load generator for the WebSocket benchmarks.
//
// One cheap client for every server: raw `net` sockets, a hand-rolled handshake, pre-built
// masked frames (masked once, written many times) and a streaming frame reader that only
// looks at headers unless it has to check a payload.
//
// Usage: node bench/loadgen.js '<json>'   where json = { scenario, port, ctl, ...params }
// Prints progress on stderr and exactly one line `RESULT <json>` on stdout, then exits.
// Every scenario is bounded in time; a watchdog kills the process if anything hangs.
import net from 'node:net'
import http from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { inflateRawSync, constants as zlibConstants } from 'node:zlib'
import { setTimeout as sleep } from 'node:timers/promises'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const HOST = '127.0.0.1'

// ---------------------------------------------------------------------------------------------
// Frames

const MASK = randomBytes(4)

/** A masked client frame: FIN set, given opcode, payload masked with MASK. */
function clientFrame (opcode, payload, { rsv1 = false } = {}) {
  const len = payload.length
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8
  const frame = Buffer.allocUnsafe(2 + ext + 4 + len)
  frame[0] = 0x80 | (rsv1 ? 0x40 : 0) | opcode
  let o = 2
  if (ext === 0) frame[1] = 0x80 | len
  else if (ext === 2) { frame[1] = 0x80 | 126; frame.writeUInt16BE(len, 2); o = 4 } else {
    frame[1] = 0x80 | 127; frame.writeUInt32BE(Math.floor(len / 2 ** 32), 2); frame.writeUInt32BE(len >>> 0, 6); o = 10
  }
  MASK.copy(frame, o)
  o += 4
  for (let i = 0; i < len; i++) frame[o + i] = payload[i] ^ MASK[i & 3]
  return frame
}

function repeatFrame (frame, times) {
  return Buffer.concat(Array.from({ length: times }, () => frame))
}

const CLOSE_FRAME = clientFrame(0x8, Buffer.from([0x03, 0xe8])) // 1000, no reason

/**
 * Streaming reader of (unmasked) server frames. push(chunk) returns how many complete
 * data frames (text/binary/continuation) ended in the chunk. Payloads are only gathered
 * while `collect` is true; then onFrame(opcode, rsv1, payload) is called per frame.
 * Control frames are always gathered (they are small) and reported through onControl.
 */
class FrameReader {
  constructor () {
    this.header = Buffer.alloc(14)
    this.headerLen = 0
    this.inPayload = false
    this.remaining = 0
    this.opcode = 0
    this.rsv1 = false
    this.collect = false
    this.parts = null
    this.onFrame = null
    this.onControl = null
    this.dataFrames = 0
    this.compressedMessages = 0
  }

  push (chunk) {
    const n = chunk.length
    let i = 0
    let done = 0
    while (i < n) {
      if (!this.inPayload) {
        let h = this.header
        let at = 0
        if (this.headerLen === 0 && n - i >= 2) {
          const need = headerSize(chunk[i + 1])
          if (n - i >= need) { h = chunk; at = i; i += need } else {
            chunk.copy(this.header, 0, i, n); this.headerLen = n - i; i = n; break
          }
        } else {
          // Rebuild a header that is split across chunks.
          while (i < n && (this.headerLen < 2 || this.headerLen < headerSize(this.header[1]))) this.header[this.headerLen++] = chunk[i++]
          if (this.headerLen < 2 || this.headerLen < headerSize(this.header[1])) break
          this.headerLen = 0
        }
        const b0 = h[at]
        const b1 = h[at + 1]
        let len = b1 & 0x7f
        if (len === 126) len = h.readUInt16BE(at + 2)
        else if (len === 127) len = h.readUInt32BE(at + 2) * 2 ** 32 + h.readUInt32BE(at + 6)
        this.opcode = b0 & 0x0f
        this.rsv1 = (b0 & 0x40) !== 0
        this.fin = (b0 & 0x80) !== 0
        this.remaining = len
        this.inPayload = true
        this.parts = (this.collect || this.opcode >= 8) ? [] : null
      }
      const take = Math.min(this.remaining, n - i)
      if (take > 0) {
        if (this.parts !== null) this.parts.push(chunk.subarray(i, i + take))
        i += take
        this.remaining -= take
      }
      if (this.remaining === 0) {
        this.inPayload = false
        const payload = this.parts === null ? null : this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts)
        this.parts = null
        if (this.opcode >= 8) {
          if (this.onControl) this.onControl(this.opcode, payload)
        } else {
          if (this.fin) { done++; this.dataFrames++ }
          if (this.rsv1) this.compressedMessages++
          if (payload !== null && this.onFrame) this.onFrame(this.opcode, this.rsv1, payload)
        }
      }
    }
    return done
  }
}

function headerSize (b1) {
  const len = b1 & 0x7f
  return 2 + (len === 126 ? 2 : len === 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0)
}

// ---------------------------------------------------------------------------------------------
// Handshake

const KEY = randomBytes(16).toString('base64')
const ACCEPT = createHash('sha1').update(KEY + GUID).digest('base64')

function upgradeRequest (port, path, extensions) {
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${HOST}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n` +
    (extensions ? `Sec-WebSocket-Extensions: ${extensions}\r\n` : '') + '\r\n', 'latin1')
}

/**
 * Open a TCP connection and perform the opening handshake. Resolves with
 * { socket (paused), headers, rest } where rest holds any bytes after the response head.
 */
function wsConnect (port, { path = '/', extensions = null, timeout = 10000, request = null } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: HOST })
    socket.setNoDelay(true)
    let buf = null
    let settled = false
    const fail = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    }
    const timer = setTimeout(() => fail(new Error('handshake timeout')), timeout)
    socket.once('connect', () => socket.write(request ?? upgradeRequest(port, path, extensions)))
    socket.on('error', fail)
    socket.on('close', () => fail(new Error('connection closed during handshake')))
    socket.on('data', function onData (chunk) {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk])
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) {
        if (buf.length > 16384) fail(new Error('response head too large'))
        return
      }
      const head = buf.toString('latin1', 0, end).split('\r\n')
      const status = head[0].split(' ')[1]
      const headers = {}
      for (let k = 1; k < head.length; k++) {
        const c = head[k].indexOf(':')
        if (c > 0) headers[head[k].slice(0, c).trim().toLowerCase()] = head[k].slice(c + 1).trim()
      }
      if (status !== '101') return fail(new Error(`handshake refused: ${head[0]}`))
      if (headers['sec-websocket-accept'] !== ACCEPT) return fail(new Error('bad Sec-WebSocket-Accept'))
      settled = true
      clearTimeout(timer)
      socket.pause()
      socket.removeAllListeners('data')
      socket.removeAllListeners('close')
      socket.removeAllListeners('error')
      socket.on('error', () => {})
      resolve({ socket, headers, rest: buf.subarray(end + 4) })
    })
  })
}

/** Open `count` connections with at most `parallel` handshakes in flight. */
async function connectMany (port, count, opts = {}, parallel = 100) {
  const out = new Array(count)
  let next = 0
  let failures = 0
  let lastError = null
  async function worker () {
    while (next < count) {
      const idx = next++
      for (let attempt = 0; attempt < 3; attempt++) {
        try { out[idx] = await wsConnect(port, opts); break } catch (err) {
          lastError = err
          if (attempt === 2) failures++
          else await sleep(20)
        }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker))
  if (failures > 0) {
    for (const c of out) c?.socket.destroy()
    throw new Error(`${failures}/${count} connections failed: ${lastError?.message}`)
  }
  return out
}

function closeAll (conns) {
  for (const c of conns) {
    if (!c) continue
    const s = c.socket ?? c
    s.destroy()
  }
}

function getJSON (port, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: HOST, port, path, timeout: 10000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { body += d })
      res.on('end', () => { try { resolve(JSON.parse(body)) } catch (err) { reject(err) } })
    })
    req.on('timeout', () => req.destroy(new Error('control request timeout')))
    req.on('error', reject)
  })
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/** Warm up, then measure counters over `duration` seconds. */
async function measure (warmupS, durationS, snapshot) {
  await sleep(warmupS * 1000)
  const a = snapshot()
  const t0 = process.hrtime.bigint()
  await sleep(durationS * 1000)
  const b = snapshot()
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  return { a, b, seconds }
}

/**
 * Pipelined echo: each connection keeps `window` messages in flight; every echoed
 * message is answered by a new one (written in one batch per received chunk).
 */
async function echoScenario (p, { payload, payloads = null, opcode, extensions = null, path = '/', verify }) {
  // `payloads` (all of one length): the burst holds distinct messages in order (refills resend its first ones);
  // else `payload` repeated. verify() gets each connection's first replies with their index in the burst.
  const size = (payloads ? payloads[0] : payload).length
  const frame = clientFrame(opcode, payloads ? payloads[0] : payload)
  const burst = payloads ? Buffer.concat(Array.from({ length: p.window }, (_, i) => clientFrame(opcode, payloads[i % payloads.length]))) : repeatFrame(frame, p.window)
  if (burst.length !== frame.length * p.window) throw new Error('echoScenario: the payloads must all have one length')
  const conns = await connectMany(p.port, p.conns, { extensions, path })
  if (extensions) {
    const ext = conns[0].headers['sec-websocket-extensions'] ?? ''
    if (!/permessage-deflate/i.test(ext)) {
      closeAll(conns)
      return { skipped: 'server did not negotiate permessage-deflate' }
    }
  }
  let running = true
  let messages = 0
  let bytes = 0
  let errors = 0
  let closed = 0
  const problems = []
  const readers = []
  for (const c of conns) {
    const r = new FrameReader()
    readers.push(r)
    let checks = 3
    r.collect = true
    let seq = 0
    r.onFrame = (op, rsv1, data) => {
      const problem = verify(op, rsv1, data, seq++)
      if (problem) { errors++; if (problems.length < 3) problems.push(problem) }
      if (--checks === 0) r.collect = false
    }
    r.onControl = (op) => { if (op === 0x8) c.socket.destroy() }
    const onChunk = (chunk) => {
      const k = r.push(chunk)
      if (k === 0) return
      messages += k
      bytes += k * size
      if (!running) return
      let left = k
      while (left > 0) {
        const m = Math.min(left, p.window)
        c.socket.write(m === p.window ? burst : burst.subarray(0, m * frame.length))
        left -= m
      }
    }
    c.socket.on('data', onChunk)
    c.socket.on('close', () => { closed++ })
    if (c.rest.length) onChunk(c.rest)
    c.socket.resume()
    c.socket.write(burst)
  }
  const { a, b, seconds } = await measure(p.warmup, p.duration, () => ({ messages, bytes, compressedFrames: readers.reduce((n, r) => n + r.compressedMessages, 0) }))
  running = false
  closeAll(conns)
  const msgs = b.messages - a.messages
  return {
    value: msgs / seconds,
    rate: msgs / seconds,
    mbps: (b.bytes - a.bytes) / seconds / 1e6,
    seconds,
    messages: msgs,
    compressedShare: msgs ? (b.compressedFrames - a.compressedFrames) / msgs : 0,
    connectionsLost: closed,
    errors,
    problems
  }
}

async function scenarioEcho32 (p) {
  const text = Buffer.from('0123456789abcdef0123456789abcdef')
  return echoScenario(p, {
    payload: text,
    opcode: 0x1,
    verify: (op, rsv1, data) => (op !== 0x1 || !data.equals(text)) ? `bad echo (opcode ${op}, ${data.length} bytes)` : null
  })
}

async function scenarioEcho64k (p) {
  const bin = randomBytes(64 * 1024)
  const r = await echoScenario(p, {
    payload: bin,
    opcode: 0x2,
    verify: (op, rsv1, data) => (op !== 0x2 || !data.equals(bin)) ? `bad echo (opcode ${op}, ${data.length} bytes)` : null
  })
  if (!r.skipped) r.value = r.mbps
  return r
}

/**
 * Validated JSON echo: {"type":"say","room":"lobby","text":"hello world","n":N} (56 bytes, N = 100, 101, ... so the
 * messages of a burst differ but have one length) answered by {"type":"said","text":"hello world","n":N}. Before the
 * measurement one extra connection sends a message that is valid JSON but breaks the schema ("n" a string) and
 * records how the server answers (invalidClose: the close code, or null when it replied), so a result from a
 * server that does not actually validate cannot pass for one that does.
 */
async function scenarioJson (p) {
  const say = (n) => Buffer.from(JSON.stringify({ type: 'say', room: 'lobby', text: 'hello world', n }))
  const said = (n) => JSON.stringify({ type: 'said', text: 'hello world', n })
  const first = 100
  const payloads = Array.from({ length: p.window }, (_, i) => say(first + i))
  const path = p.path ?? '/json'
  const probe = await probeInvalid(p.port, path, Buffer.from('{"type":"say","room":"lobby","text":"hello world","n":"many"}'))
  const r = await echoScenario(p, {
    payloads,
    opcode: 0x1,
    path,
    verify: (op, rsv1, data, seq) => {
      const want = said(first + seq)
      return (op !== 0x1 || data.toString() !== want) ? `bad reply ${seq} (opcode ${op}): ${data.toString().slice(0, 80)} instead of ${want}` : null
    }
  })
  return { ...r, invalidClose: probe.closeCode, invalidAnswer: probe.answer }
}

/** Send one bad message on a fresh connection; resolve with how the server answered within 2 s. */
async function probeInvalid (port, path, payload) {
  const [c] = await connectMany(port, 1, { path })
  return new Promise((resolve) => {
    const r = new FrameReader()
    r.collect = true
    const done = (closeCode, answer) => { clearTimeout(timer); c.socket.destroy(); resolve({ closeCode, answer }) }
    const timer = setTimeout(() => done(null, 'no answer within 2 s'), 2000)
    r.onFrame = (op, rsv1, data) => done(null, `replied: ${data.toString().slice(0, 80)}`)
    r.onControl = (op, data) => { if (op === 0x8) done(data.length >= 2 ? data.readUInt16BE(0) : 1005, `closed: ${data.subarray(2).toString()}`) }
    c.socket.on('data', (chunk) => r.push(chunk))
    c.socket.on('close', () => done(null, 'TCP closed without a Close frame'))
    if (c.rest.length) r.push(c.rest)
    c.socket.resume()
    c.socket.write(clientFrame(0x1, payload))
  })
}

/** Compressible text, ~4 KiB: JSON-ish records. */
function compressibleText (size) {
  const parts = []
  let n = 0
  let i = 0
  while (n < size) {
    const s = `{"id":${i},"user":"user-${i % 37}","event":"${['click', 'view', 'scroll', 'submit'][i % 4]}","ok":true},`
    parts.push(s)
    n += s.length
    i++
  }
  return Buffer.from(parts.join('').slice(0, size))
}

async function scenarioDeflate (p) {
  const text = compressibleText(p.size ?? 4096)
  return echoScenario(p, {
    payload: text,
    opcode: 0x1,
    extensions: 'permessage-deflate; client_no_context_takeover; server_no_context_takeover',
    verify: (op, rsv1, data) => {
      if (op !== 0x1) return `bad opcode ${op}`
      let plain = data
      if (rsv1) {
        try { plain = inflateRawSync(Buffer.concat([data, Buffer.from([0x00, 0x00, 0xff, 0xff])]), { finishFlush: zlibConstants.Z_SYNC_FLUSH }) } catch (err) { return `inflate failed: ${err.message}` }
      }
      return plain.equals(text) ? null : `bad echo (${plain.length} bytes after inflate)`
    }
  })
}

function percentile (sorted, q) {
  if (sorted.length === 0) return NaN
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[idx]
}

/**
 * Open-loop latency: `rate` messages/s in total, spread round-robin over the connections,
 * scheduled from a 1 ms timer; latency = time from the write to the end of the echo.
 */
async function scenarioLatency (p) {
  const payload = Buffer.from('0123456789abcdef0123456789abcdef')
  const frame = clientFrame(0x1, payload)
  const conns = await connectMany(p.port, p.conns)
  const RING = 1 << 16
  const state = conns.map(() => ({ times: new Float64Array(RING), head: 0, tail: 0 }))
  let recording = false
  const samples = []
  let lost = 0
  conns.forEach((c, idx) => {
    const r = new FrameReader()
    const st = state[idx]
    c.socket.on('data', (chunk) => {
      const k = r.push(chunk)
      if (k === 0) return
      const now = Number(process.hrtime.bigint())
      for (let j = 0; j < k; j++) {
        const sent = st.times[st.head & (RING - 1)]
        st.head++
        if (recording) samples.push(now - sent)
      }
    })
    c.socket.on('close', () => { lost++ })
    c.socket.resume()
  })
  let sent = 0 // scheduled slots consumed
  let writes = 0 // messages actually written
  let dropped = 0 // slots skipped because the generator fell behind
  let start = 0
  const maxPerTick = Math.max(1, Math.ceil(p.rate / 100))
  let skippedTicks = 0
  const tick = () => {
    const now = Number(process.hrtime.bigint())
    const due = Math.floor(((now - start) / 1e9) * p.rate)
    let burst = 0
    while (sent < due && burst < maxPerTick) {
      const idx = sent % conns.length
      const st = state[idx]
      if (st.tail - st.head >= RING) { skippedTicks++; break }
      st.times[st.tail & (RING - 1)] = Number(process.hrtime.bigint())
      st.tail++
      conns[idx].socket.write(frame)
      sent++
      writes++
      burst++
    }
    if (sent < due && burst === maxPerTick) { dropped += due - sent; sent = due } // fell behind: do not burst to catch up
  }
  start = Number(process.hrtime.bigint())
  const timer = setInterval(tick, 1)
  await sleep(p.warmup * 1000)
  const sentBefore = writes
  const droppedBefore = dropped
  recording = true
  const t0 = process.hrtime.bigint()
  await sleep(p.duration * 1000)
  recording = false
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  const sentDuring = writes - sentBefore
  const droppedDuring = dropped - droppedBefore
  clearInterval(timer)
  await sleep(100)
  closeAll(conns)
  const sorted = Float64Array.from(samples).sort()
  const us = (ns) => ns / 1000
  let sum = 0
  for (const v of sorted) sum += v
  return {
    value: us(percentile(sorted, 0.99)),
    p50: us(percentile(sorted, 0.50)),
    p90: us(percentile(sorted, 0.90)),
    p99: us(percentile(sorted, 0.99)),
    p999: us(percentile(sorted, 0.999)),
    max: us(sorted[sorted.length - 1] ?? NaN),
    mean: us(sum / sorted.length),
    samples: sorted.length,
    achievedRate: sentDuring / seconds,
    connectionsLost: lost,
    dropped: droppedDuring,
    skippedTicks
  }
}

/** Handshakes: `concurrency` workers each loop connect -> upgrade -> close frame -> wait close. */
async function scenarioHandshakes (p) {
  const request = upgradeRequest(p.port, '/', null)
  let completed = 0
  let failures = 0
  let lastError = null
  let running = true
  async function once () {
    const { socket, rest } = await wsConnect(p.port, { request, timeout: 5000 })
    await new Promise((resolve) => {
      const t = setTimeout(() => { socket.destroy(); resolve() }, 2000)
      const r = new FrameReader()
      r.onControl = (op) => { if (op === 0x8) socket.end() } // server answered our close
      socket.on('data', (chunk) => r.push(chunk))
      socket.on('close', () => { clearTimeout(t); resolve() })
      if (rest.length) r.push(rest)
      socket.resume()
      socket.write(CLOSE_FRAME)
    })
  }
  let slow = 0 // cycles over 200 ms (SYN retransmits, TIME_WAIT collisions, stalls)
  let slowest = 0
  async function worker () {
    while (running) {
      const t = performance.now()
      try {
        await once()
        completed++
        const ms = performance.now() - t
        if (ms > 200) slow++
        if (ms > slowest) slowest = ms
      } catch (err) {
        failures++; lastError = err
        await sleep(10)
      }
    }
  }
  const workers = Array.from({ length: p.concurrency }, worker)
  const { a, b, seconds } = await measure(p.warmup, p.duration, () => ({ completed, failures }))
  running = false
  await Promise.race([Promise.all(workers), sleep(5000)])
  if (b.completed === a.completed) return { error: `no handshake completed: ${lastError?.message}` }
  return {
    value: (b.completed - a.completed) / seconds,
    rate: (b.completed - a.completed) / seconds,
    failures: b.failures - a.failures,
    lastError: lastError?.message ?? null,
    slowCycles: slow,
    slowestMs: slowest,
    seconds
  }
}

/**
 * Memory reading that has settled: GC + read every 250 ms until two consecutive RSS readings
 * agree within 0.5 % (at most `tries` readings); returns the last one.
 */
async function settledMemory (ctl, tries = 8) {
  let prev = await getJSON(ctl, '/rss')
  for (let i = 1; i < tries; i++) {
    await sleep(250)
    const cur = await getJSON(ctl, '/rss')
    if (Math.abs(cur.rss - prev.rss) <= prev.rss * 0.005) return cur
    prev = cur
  }
  return prev
}

/** RSS per idle connection: server RSS delta (after GC) / N. */
async function scenarioRss (p) {
  // Warm the server's code paths first so JIT and one-off allocations are not charged to connections.
  const warm = await connectMany(p.port, Math.min(200, p.count))
  closeAll(warm)
  await sleep(300)
  const before = await settledMemory(p.ctl)
  const t0 = Date.now()
  const conns = await connectMany(p.port, p.count, {}, 50)
  const connectSeconds = (Date.now() - t0) / 1000
  let lost = 0
  for (const c of conns) { c.socket.on('close', () => { lost++ }); c.socket.resume() }
  await sleep(p.settle * 1000)
  const after = await settledMemory(p.ctl)
  closeAll(conns)
  const per = (k) => (after[k] - before[k]) / p.count
  return {
    value: per('rss'),
    rssPerConn: per('rss'),
    heapPerConn: per('heapUsed'),
    heapTotalPerConn: per('heapTotal'),
    externalPerConn: per('external'),
    arrayBuffersPerConn: per('arrayBuffers'),
    rssBefore: before.rss,
    rssAfter: after.rss,
    count: p.count,
    connectionsLost: lost,
    connectSeconds
  }
}

/** Fan-out: one publisher, `subs` subscribers; `window` published messages in flight. */
async function scenarioFanout (p) {
  const payload = Buffer.from('fan-out payload: 0123456789abcdef0123456789abcdef0123')
  const frame = clientFrame(0x1, payload)
  const subs = await connectMany(p.port, p.subs, { path: '/sub' }, 50)
  const pub = await connectMany(p.port, 1, { path: '/pub' })
  const pubSocket = pub[0].socket
  let pubClosed = false
  pubSocket.on('close', () => { pubClosed = true })
  pubSocket.on('data', () => {})
  pubSocket.resume()
  let deliveries = 0
  const got = new Uint8Array(p.subs)
  let gotCount = 0
  let published = 0
  let running = false
  const pump = () => {
    const inFlight = published - Math.floor(deliveries / p.subs)
    for (let k = inFlight; k < p.window && running; k++) { pubSocket.write(frame); published++ }
  }
  let lost = 0
  subs.forEach((c, idx) => {
    const r = new FrameReader()
    c.socket.on('data', (chunk) => {
      const k = r.push(chunk)
      if (k === 0) return
      deliveries += k
      if (got[idx] === 0) { got[idx] = 1; gotCount++ }
      if (running) pump()
    })
    c.socket.on('close', () => { lost++ })
    if (c.rest.length) r.push(c.rest)
    c.socket.resume()
  })
  // Probe until every subscriber has received something (subscriptions may complete after the 101).
  let ready = false
  for (let attempt = 0; attempt < 20 && !pubClosed; attempt++) {
    pubSocket.write(frame)
    const until = Date.now() + 500
    while (Date.now() < until && gotCount < p.subs && !pubClosed) await sleep(10)
    if (gotCount === p.subs) { ready = true; break }
  }
  if (!ready) {
    closeAll(subs); closeAll(pub)
    return { skipped: pubClosed ? 'server closed the publisher (publish unsupported?)' : `only ${gotCount}/${p.subs} subscribers received the probe` }
  }
  await sleep(200)
  deliveries = 0
  published = 0
  running = true
  pump()
  const { a, b, seconds } = await measure(p.warmup, p.duration, () => ({ deliveries, published }))
  running = false
  closeAll(subs); closeAll(pub)
  return {
    value: (b.deliveries - a.deliveries) / seconds,
    deliveries: (b.deliveries - a.deliveries) / seconds,
    messagesPerSecond: (b.deliveries - a.deliveries) / seconds / p.subs,
    subscribersLost: lost,
    seconds
  }
}

const SCENARIOS = {
  echo32: scenarioEcho32,
  echo64k: scenarioEcho64k,
  latency: scenarioLatency,
  handshakes: scenarioHandshakes,
  rss: scenarioRss,
  deflate: scenarioDeflate,
  fanout: scenarioFanout,
  json: scenarioJson
}

// ---------------------------------------------------------------------------------------------

async function main () {
  const p = JSON.parse(process.argv[2] ?? '{}')
  const fn = SCENARIOS[p.scenario]
  if (!fn) {
    process.stderr.write(`loadgen: unknown scenario ${p.scenario}; one of ${Object.keys(SCENARIOS).join(', ')}\n`)
    process.exit(2)
  }
  const budget = ((p.warmup ?? 0) + (p.duration ?? 0) + (p.timeout ?? 60)) * 1000
  setTimeout(() => {
    process.stdout.write(`RESULT ${JSON.stringify({ error: 'loadgen watchdog fired' })}\n`)
    process.exit(3)
  }, budget).unref()
  let result
  try { result = await fn(p) } catch (err) { result = { error: err.message } }
  const cpu = process.cpuUsage()
  result.loadgenCpuSeconds = (cpu.user + cpu.system) / 1e6
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`)
  // Sockets are destroyed; exit without waiting for lingering handles.
  setImmediate(() => process.exit(0))
}

main()
