// The ceiling: a bare `net` server that performs only the HTTP/1.1 upgrade handshake and then
// bounces every complete masked client frame back as an unmasked frame with the same
// FIN/opcode/payload. No UTF-8 validation, no extensions, no fragmentation bookkeeping —
// nothing a real server could skip. Paths: /sub and /pub give a topic fan-out (every data
// frame received on /pub is written to every /sub connection); any other path echoes.
import net from 'node:net'
import { createHash } from 'node:crypto'
import { parseServerArgs, announceReady } from './common.js'

const { port, ctlPort } = parseServerArgs()
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const MAX_HEADER = 16 * 1024
const MAX_PAYLOAD = 64 * 1024 * 1024
const subscribers = new Set()

function acceptKey (key) {
  return createHash('sha1').update(key + GUID).digest('base64')
}

/** Queue of received chunks with zero-copy reads when a range lies inside one chunk. */
class ChunkQueue {
  constructor () { this.chunks = []; this.length = 0 }
  push (buf) { this.chunks.push(buf); this.length += buf.length }
  /** Byte at offset `i` (i < length) without consuming. */
  byteAt (i) {
    for (const c of this.chunks) {
      if (i < c.length) return c[i]
      i -= c.length
    }
    throw new RangeError('byteAt past end')
  }
  /** Remove and return the first `n` bytes (n <= length). */
  take (n) {
    this.length -= n
    const first = this.chunks[0]
    if (n === first.length) { this.chunks.shift(); return first }
    if (n < first.length) { this.chunks[0] = first.subarray(n); return first.subarray(0, n) }
    const out = Buffer.allocUnsafe(n)
    let o = 0
    while (o < n) {
      const c = this.chunks[0]
      const want = n - o
      if (c.length <= want) { c.copy(out, o); o += c.length; this.chunks.shift() } else {
        c.copy(out, o, 0, want); this.chunks[0] = c.subarray(want); o += want
      }
    }
    return out
  }
}

function writeHeader (out, o, fin, opcode, len) {
  out[o++] = (fin ? 0x80 : 0) | opcode
  if (len < 126) { out[o++] = len } else if (len < 65536) {
    out[o++] = 126; out.writeUInt16BE(len, o); o += 2
  } else {
    out[o++] = 127; out.writeUInt32BE(Math.floor(len / 0x100000000), o); out.writeUInt32BE(len >>> 0, o + 4); o += 8
  }
  return o
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** Copy `payload` into `out` at `o`, XOR-ing with the mask (4 bytes at a time where aligned). Returns o + length. */
function unmaskInto (out, o, payload, m0, m1, m2, m3) {
  const n = payload.length
  if (n < 64) {
    const m = [m0, m1, m2, m3]
    for (let i = 0; i < n; i++) out[o + i] = payload[i] ^ m[i & 3]
    return o + n
  }
  payload.copy(out, o)
  const start = out.byteOffset + o
  const lead = (4 - (start & 3)) & 3 // bytes before the first 4-byte boundary
  const m = [m0, m1, m2, m3]
  for (let i = 0; i < lead; i++) out[o + i] ^= m[i & 3]
  const words = (n - lead) >>> 2
  const k0 = m[lead & 3]; const k1 = m[(lead + 1) & 3]; const k2 = m[(lead + 2) & 3]; const k3 = m[(lead + 3) & 3]
  const key = LITTLE_ENDIAN ? (k0 | (k1 << 8) | (k2 << 16) | (k3 << 24)) : ((k0 << 24) | (k1 << 16) | (k2 << 8) | k3)
  const view = new Int32Array(out.buffer, start + lead, words)
  for (let w = 0; w < words; w++) view[w] ^= key
  for (let i = lead + words * 4; i < n; i++) out[o + i] ^= m[i & 3]
  return o + n
}

function onConnection (socket) {
  socket.setNoDelay(true)
  const q = new ChunkQueue()
  let upgraded = false
  let role = 'echo'
  let closing = false

  function handshake () {
    // Look for the end of the header block in the (small) queued bytes.
    const head = q.chunks.length === 1 ? q.chunks[0] : Buffer.concat(q.chunks)
    const end = head.indexOf('\r\n\r\n')
    if (end === -1) {
      if (head.length > MAX_HEADER) socket.destroy()
      return false
    }
    q.chunks = [head]
    q.take(end + 4)
    const lines = head.toString('latin1', 0, end).split('\r\n')
    const [method, target] = lines[0].split(' ')
    let key = null
    for (let i = 1; i < lines.length; i++) {
      const c = lines[i].indexOf(':')
      if (c > 0 && lines[i].slice(0, c).trim().toLowerCase() === 'sec-websocket-key') key = lines[i].slice(c + 1).trim()
    }
    if (method !== 'GET' || !key) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return false
    }
    const path = (target || '/').split('?')[0]
    role = path === '/sub' ? 'sub' : path === '/pub' ? 'pub' : 'echo'
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`)
    if (role === 'sub') {
      subscribers.add(socket)
      socket.on('close', () => subscribers.delete(socket))
    }
    upgraded = true
    return true
  }

  function frames () {
    // Echoed output is never larger than the input (same header, minus the 4 mask bytes).
    let out = null
    let o = 0
    let control = null
    while (q.length >= 2 && !closing) {
      const b0 = q.byteAt(0)
      const b1 = q.byteAt(1)
      if ((b1 & 0x80) === 0) { socket.destroy(); return } // client frames must be masked
      let len = b1 & 0x7f
      let hdr = 2
      if (len === 126) {
        if (q.length < 4) break
        len = (q.byteAt(2) << 8) | q.byteAt(3); hdr = 4
      } else if (len === 127) {
        if (q.length < 10) break
        const hi = (q.byteAt(2) << 24 >>> 0) + (q.byteAt(3) << 16) + (q.byteAt(4) << 8) + q.byteAt(5)
        const lo = (q.byteAt(6) << 24 >>> 0) + (q.byteAt(7) << 16) + (q.byteAt(8) << 8) + q.byteAt(9)
        len = hi * 0x100000000 + lo; hdr = 10
      }
      if (len > MAX_PAYLOAD) { socket.destroy(); return }
      if (q.length < hdr + 4 + len) break
      const frame = q.take(hdr + 4 + len)
      const m0 = frame[hdr]; const m1 = frame[hdr + 1]; const m2 = frame[hdr + 2]; const m3 = frame[hdr + 3]
      const payload = frame.subarray(hdr + 4)
      const opcode = b0 & 0x0f
      if (opcode >= 0x8) {
        if (opcode === 0x9 || opcode === 0x8) {
          const c = Buffer.allocUnsafe(hdr + len)
          unmaskInto(c, writeHeader(c, 0, true, opcode === 0x9 ? 0xa : 0x8, len), payload, m0, m1, m2, m3)
          control = control ? Buffer.concat([control, c]) : c
          if (opcode === 0x8) closing = true
        }
        continue
      }
      if (role === 'sub') continue
      if (out === null) out = Buffer.allocUnsafe(q.length + frame.length)
      o = unmaskInto(out, writeHeader(out, o, (b0 & 0x80) !== 0, opcode, len), payload, m0, m1, m2, m3)
    }
    if (o > 0) {
      const data = out.subarray(0, o)
      if (role === 'echo') socket.write(data)
      else for (const sub of subscribers) sub.write(data)
    }
    if (control) socket.write(control)
    if (closing) socket.end()
  }

  socket.on('data', (chunk) => {
    q.push(chunk)
    if (!upgraded && !handshake()) return
    frames()
  })
  socket.on('error', () => socket.destroy())
}

const server = net.createServer(onConnection)
server.listen(port, '127.0.0.1', async () => {
  await announceReady('raw-tcp', server.address().port, ctlPort)
})
