// Load-generator process of the cluster benchmark / soak, driven over IPC: many raw WebSocket clients (`net`
// sockets, its own handshake, a frame reader that looks only at headers and at the payload's `t=` timestamp), so
// that one process can hold ~12,000 connections and read hundreds of thousands of messages per second.
//
// kind 'plugin': GET /sub (the server subscribes the socket). kind 'socketio': GET /socket.io/?EIO=4&transport=
// websocket, then the Engine.IO open packet is answered with a Socket.IO CONNECT ("40") and pings ("2") with
// pongs ("3"). Latency: (receive time − the payload's `t=` send time), both on CLOCK_MONOTONIC (monoUs), one
// clock reading per 'data' event.
import { connect } from 'node:net'
import { exitWithParent, histIndex, histSparse, HIST_SIZE, monoUs, serveRequests } from './cluster-common.js'

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const T = 0x74 // 't'
const EQ = 0x3d // '='
const SEMI = 0x3b // ';'

/** A masked client frame with an all-zero masking key (valid per RFC 6455, and the payload stays as is). */
function clientFrame (opcode, payload) {
  const p = Buffer.from(payload)
  const head = Buffer.from([0x80 | opcode, 0x80 | p.length, 0, 0, 0, 0])
  return Buffer.concat([head, p])
}
const SIO_CONNECT = clientFrame(1, '40')
const SIO_PONG = clientFrame(1, '3')

let hist = new Float64Array(HIST_SIZE)
let deliveries = 0
let firstUs = 0
let lastUs = 0
const conns = new Set()
let open = 0
let lastCloseUs = 0

class Conn {
  constructor (kind) {
    this.kind = kind
    this.socket = null
    this.upgraded = false
    this.ready = false
    this.head = ''
    this.rest = null
    this.received = 0
    this.closing = false
  }

  onData (chunk) {
    if (!this.upgraded) {
      this.head += chunk.toString('latin1')
      const end = this.head.indexOf('\r\n\r\n')
      if (end === -1) return
      if (!this.head.startsWith('HTTP/1.1 101')) {
        this.fail(new Error(this.head.slice(0, this.head.indexOf('\r\n'))))
        return
      }
      this.upgraded = true
      const extra = Buffer.from(this.head.slice(end + 4), 'latin1')
      this.head = ''
      if (this.kind === 'plugin') this.becomeReady()
      if (extra.length === 0) return
      chunk = extra
    }
    let buf = chunk
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk])
      this.rest = null
    }
    const now = monoUs()
    let at = 0
    const n = buf.length
    while (at + 2 <= n) {
      const b0 = buf[at]
      let len = buf[at + 1] & 0x7f
      let start = at + 2
      if (len === 126) {
        if (at + 4 > n) break
        len = buf.readUInt16BE(at + 2)
        start = at + 4
      } else if (len === 127) {
        if (at + 10 > n) break
        len = Number(buf.readBigUInt64BE(at + 2))
        start = at + 10
      }
      const end = start + len
      if (end > n) break
      const opcode = b0 & 0x0f
      if (opcode === 1 || opcode === 2) this.onMessage(buf, start, end, now)
      else if (opcode === 8) this.onClose(buf.subarray(start, end))
      else if (opcode === 9) this.socket.write(clientFrame(10, buf.subarray(start, end)))
      at = end
    }
    if (at < n) this.rest = buf.subarray(at)
  }

  onMessage (buf, start, end, now) {
    // The timestamp `t=` is at the payload's start (plugin) or after `42["m","` (socket.io).
    const limit = Math.min(end - 1, start + 12)
    for (let i = start; i < limit; i++) {
      if (buf[i] === T && buf[i + 1] === EQ) {
        let t = 0
        for (let j = i + 2; j < end; j++) {
          const c = buf[j]
          if (c === SEMI) break
          t = t * 10 + (c - 48)
        }
        this.received++
        deliveries++
        if (firstUs === 0) firstUs = now
        lastUs = now
        hist[histIndex(now - t)]++
        return
      }
    }
    if (this.kind === 'socketio') {
      const first = buf[start]
      if (first === 0x30 /* '0' open */ && end - start > 1) this.socket.write(SIO_CONNECT)
      else if (first === 0x34 && buf[start + 1] === 0x30 /* '40' connected */) this.becomeReady()
      else if (first === 0x32 && end - start === 1 /* '2' ping */) this.socket.write(SIO_PONG)
    }
  }

  onClose (payload) {
    if (this.closing) return
    this.closing = true
    this.socket.write(clientFrame(8, payload.subarray(0, 2)))
  }

  becomeReady () {
    if (this.ready) return
    this.ready = true
    this.onReady?.(null)
  }

  fail (err) {
    this.onReady?.(err)
    this.onReady = null
    this.socket.destroy()
  }
}

function openOne (port, path, kind, localAddress) {
  return new Promise((resolve) => {
    const c = new Conn(kind)
    let settled = false
    const done = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(err)
    }
    const timer = setTimeout(() => { done(new Error('handshake timeout')); c.socket.destroy() }, 30_000)
    c.onReady = (err) => { c.onReady = null; done(err) }
    const socket = connect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}), noDelay: true })
    c.socket = socket
    socket.on('connect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    })
    socket.on('data', (d) => c.onData(d))
    socket.on('error', (err) => done(err))
    socket.on('close', () => {
      if (conns.delete(c)) { open--; lastCloseUs = monoUs() }
      done(new Error('closed before ready'))
    })
    conns.add(c)
    open++
  })
}

async function connectAll ({ targets, kind, concurrency = 100, localAddresses = [] }) {
  const path = kind === 'socketio' ? '/socket.io/?EIO=4&transport=websocket' : '/sub'
  const jobs = []
  for (const t of targets) for (let i = 0; i < t.count; i++) jobs.push(t.port)
  const t0 = performance.now()
  let next = 0
  let ok = 0
  const errors = new Map()
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, async () => {
    while (next < jobs.length) {
      const i = next++
      const local = localAddresses.length > 0 ? localAddresses[i % localAddresses.length] : undefined
      const err = await openOne(jobs[i], path, kind, local)
      if (err) {
        const k = err.code ?? err.message
        errors.set(k, (errors.get(k) ?? 0) + 1)
      } else ok++
    }
  }))
  return { connected: ok, failed: jobs.length - ok, errors: Object.fromEntries(errors), ms: performance.now() - t0, open }
}

function stats () {
  let min = Infinity
  let max = 0
  for (const c of conns) {
    if (c.received < min) min = c.received
    if (c.received > max) max = c.received
  }
  return { deliveries, firstUs, lastUs, hist: histSparse(hist), perSocketMin: conns.size ? min : 0, perSocketMax: max, open }
}

function reset () {
  hist = new Float64Array(HIST_SIZE)
  deliveries = 0
  firstUs = 0
  lastUs = 0
  for (const c of conns) c.received = 0
  return {}
}

/** Wait until every connection is closed (by the servers) or `ms` passed. */
async function waitClosed ({ ms = 60_000 }) {
  const deadline = Date.now() + ms
  while (open > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  return { open, lastCloseUs }
}

function destroyAll () {
  for (const c of conns) c.socket.destroy()
  return { open }
}

serveRequests({ connect: connectAll, stats, reset, waitClosed, destroyAll, memory: () => ({ rss: process.memoryUsage().rss }) })
exitWithParent(60 * 60 * 1000, destroyAll)
process.send({ ready: true, pid: process.pid })
