/**
 * Adversarial review of the engine's hand-offs, driven byte by byte over an in-memory stream pair: the inflate
 * backlog (several frames, a Close and FIN in one write, split at every boundary), the peer's FIN deferred while a
 * message inflates, ending TCP behind compression, a peer that vanishes mid-inflation or between its Close and our
 * compressed reply, the payload buffer of frames spanning reads, and the queues' own bookkeeping.
 *
 * Each test is one attack and states a guarantee. Those titled 'fixed: ...' reproduced a defect this review found
 * (they failed before the fix that followed it).
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { deflateRawSync, inflateRawSync, constants as zlibConstants } from 'node:zlib'
import { Connection, type ConnectionHooks, type ConnectionOptions } from '../../lib/protocol/connection.js'
import { Receiver } from '../../lib/protocol/receiver.js'
import { Sender } from '../../lib/protocol/sender.js'
import { HeldMessages } from '../../lib/protocol/held-messages.js'
import { PerMessageDeflate } from '../../lib/extensions/permessage-deflate/codec.js'
import { DEFAULT_DEFLATE_OPTIONS } from '../../lib/extensions/permessage-deflate/options.js'
import { duplexPair, type DuplexEnd } from '../../lib/testing/duplex-pair.js'
import type { ClosingError } from '../../lib/protocol/closing-error.js'
import {
  frame, frames, closeFrame, parseFrames, parseClose, RecordingHost, describe, delay, waitFor, guardUnhandled, type ParsedFrame
} from '../helpers/index.js'


const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff])

/** A permessage-deflate payload for `text`, as a client compressor sends it (sync flush, trailer removed). */
function compressed (text: string | Buffer): Buffer {
  const out = deflateRawSync(typeof text === 'string' ? Buffer.from(text) : text, { finishFlush: zlibConstants.Z_SYNC_FLUSH })
  return out.subarray(0, out.length - 4)
}

/** A masked, compressed text frame (RSV1), with a fixed mask so every run sends the same bytes. */
function deflated (text: string, mask = Buffer.from([0x11, 0x22, 0x33, 0x44])): Buffer {
  return frame(0x1, compressed(text), { rsv1: true, mask })
}

/** The server's reply payload, inflated (the server resets its compressor after every message here). */
function inflateReply (f: ParsedFrame): string {
  return f.rsv1 ? inflateRawSync(Buffer.concat([f.payload, TRAILER]), { finishFlush: zlibConstants.Z_SYNC_FLUSH }).toString() : f.payload.toString()
}

interface Owner {
  messages: string[]
  pings: string[]
  errors: Array<[number, string]>
  closes: Array<[number, string]>
  /** What the message hook does besides recording (reply, close, terminate...). */
  onMessage: (conn: Connection<Owner>, text: string) => void
  conn: Connection<Owner> | null
}

const hooks: ConnectionHooks<Owner> = {
  message (o, data) {
    const text = data.toString()
    o.messages.push(text)
    o.onMessage(o.conn!, text)
  },
  ping (o, data) { o.pings.push(data.toString()) },
  pong () {},
  error (o, err: ClosingError) { o.errors.push([err.closeCode, err.code]) },
  drain () {},
  callbackError () {},
  close (o, code, reason) { o.closes.push([code, reason]) }
}

interface Harness {
  owner: Owner
  conn: Connection<Owner>
  client: DuplexEnd
  server: DuplexEnd
  /** Everything the server wrote, as frames. */
  received: () => ParsedFrame[]
  clientEnded: () => boolean
}

/** A server-role Connection over one end of a pair (compression negotiated, replies compressed from 0 bytes). */
function harness (opts: Partial<ConnectionOptions> = {}, deflate = true, onMessage: Owner['onMessage'] = () => {}): Harness {
  const [client, server] = duplexPair()
  const chunks: Buffer[] = []
  let ended = false
  client.on('data', (c: Buffer) => chunks.push(c))
  client.on('end', () => { ended = true })
  client.on('error', () => {})
  server.on('error', () => {})
  const codec = deflate
    ? new PerMessageDeflate(
      { serverNoContextTakeover: true, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 },
      'server', { ...DEFAULT_DEFLATE_OPTIONS, threshold: 0 }, 1 << 20)
    : null
  const options: ConnectionOptions = {
    isServer: true,
    maxPayload: 1 << 20,
    closeTimeout: 1000,
    sendHighWaterMark: 1 << 20,
    maxBufferedAmount: 16 << 20,
    drainTimeout: 0,
    inboundHighWaterMark: 1 << 20,
    heartbeat: null,
    deflate: codec,
    ...opts
  }
  const owner: Owner = { messages: [], pings: [], errors: [], closes: [], onMessage, conn: null }
  const conn = new Connection<Owner>(server, owner, hooks, options)
  owner.conn = conn
  conn.start(null)
  return {
    owner,
    conn,
    client,
    server,
    received: () => parseFrames(Buffer.concat(chunks)).frames,
    clientEnded: () => ended
  }
}

/**
 * Write `bytes` from the client in two pieces cut at `cut` (a turn of the event loop between them), then FIN.
 * Each piece is a fresh copy, as a socket read is: the receiver unmasks in place.
 */
async function sendSplit (h: Harness, bytes: Buffer, cut: number, fin: boolean): Promise<void> {
  h.client.write(Buffer.from(bytes.subarray(0, cut)))
  await new Promise((resolve) => setImmediate(resolve))
  if (cut < bytes.length) h.client.write(Buffer.from(bytes.subarray(cut)))
  if (fin) h.client.end()
}

function reply (conn: Connection<Owner>, text: string): void {
  conn.sendText('re:' + text)
}

function noUnhandled (t: Test): () => void {
  const guard = guardUnhandled()
  t.teardown(guard.stop)
  return () => t.same(guard.errors.map(String), [], 'no uncaught exception, no unhandled rejection')
}

// ---- several frames, a Close and FIN in one write, split at every boundary ----

t.test('compressed and plain messages, a ping, a Close and FIN, split at every byte boundary: every message once and in order, every reply before the Close echo, close 1000', async (t) => {
  const check = noUnhandled(t)
  const bytes = Buffer.concat([
    deflated('one'), deflated('two'), frame(0x1, 'three', { mask: Buffer.from([1, 2, 3, 4]) }),
    frame(0x9, 'p', { mask: Buffer.from([5, 6, 7, 8]) }), deflated('four'), closeFrame(1000, 'bye', { mask: Buffer.from([9, 9, 9, 9]) })
  ])
  const failures: string[] = []
  for (let cut = 1; cut <= bytes.length; cut++) {
    const h = harness({}, true, reply)
    await sendSplit(h, bytes, cut, true)
    try {
      await waitFor(() => h.owner.closes.length > 0, 2000, 'close', 2)
    } catch {
      failures.push(`cut ${cut}: no close (messages ${h.owner.messages.join(',')})`)
      h.server.destroy()
      continue
    }
    const got = h.received()
    const data = got.filter((f) => f.opcode === 0x1).map(inflateReply)
    const last = got.at(-1)
    const ok = h.owner.messages.join(',') === 'one,two,three,four' &&
      data.join(',') === 're:one,re:two,re:three,re:four' &&
      h.owner.pings.join(',') === 'p' && got.some((f) => f.opcode === 0xa) &&
      last?.opcode === 0x8 && parseClose(last.payload).code === 1000 &&
      h.owner.closes.length === 1 && h.owner.closes[0]![0] === 1000 && h.owner.errors.length === 0 && h.clientEnded()
    if (!ok) {
      failures.push(`cut ${cut}: messages ${h.owner.messages.join(',')} replies ${data.join(',')} last ${last?.opcode} ` +
        `closes ${JSON.stringify(h.owner.closes)} errors ${JSON.stringify(h.owner.errors)} ended ${h.clientEnded()}`)
    }
  }
  t.same(failures, [], `${bytes.length} cuts, each as described`)
  check()
})

t.test('the same bytes written one byte per turn of the event loop', async (t) => {
  const check = noUnhandled(t)
  const bytes = Buffer.concat([deflated('alpha'), frame(0x1, 'beta', { mask: Buffer.from([1, 2, 3, 4]) }), deflated('gamma'), closeFrame(1000)])
  const h = harness({}, true, reply)
  for (let i = 0; i < bytes.length; i++) {
    h.client.write(Buffer.from(bytes.subarray(i, i + 1)))
    if (i % 3 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  h.client.end()
  await waitFor(() => h.owner.closes.length > 0, 2000, 'close')
  t.same(h.owner.messages, ['alpha', 'beta', 'gamma'])
  t.same(h.received().filter((f) => f.opcode === 0x1).map(inflateReply), ['re:alpha', 're:beta', 're:gamma'])
  t.same(h.owner.closes, [[1000, '']])
  check()
})

t.test('a compressed message and FIN with no Close, at every split: the message is delivered, then the connection closes 1006 (the FIN is not lost while inflating)', async (t) => {
  const check = noUnhandled(t)
  const bytes = Buffer.concat([deflated('last words'), deflated('really last')])
  const failures: string[] = []
  for (let cut = 1; cut <= bytes.length; cut++) {
    const h = harness({}, true)
    await sendSplit(h, bytes, cut, true)
    try {
      await waitFor(() => h.owner.closes.length > 0, 2000, 'close', 2)
    } catch {
      failures.push(`cut ${cut}: never closed (messages ${h.owner.messages.join(',')})`)
      h.server.destroy()
      continue
    }
    if (h.owner.messages.join('|') !== 'last words|really last' || h.owner.closes[0]![0] !== 1006 || !h.clientEnded()) {
      failures.push(`cut ${cut}: ${h.owner.messages.join('|')} ${JSON.stringify(h.owner.closes)} ended ${h.clientEnded()}`)
    }
  }
  t.same(failures, [], `${bytes.length} cuts: both messages, then close 1006 and our FIN`)
  check()
})

t.test('a compressed message, half a frame header, then FIN: the message is delivered and the connection closes (no hang on the leftover)', async (t) => {
  const check = noUnhandled(t)
  const h = harness({}, true)
  const next = frame(0x2, Buffer.alloc(300), { mask: Buffer.from([1, 2, 3, 4]) })
  h.client.write(Buffer.concat([deflated('before'), next.subarray(0, 3)]))
  h.client.end()
  await waitFor(() => h.owner.closes.length > 0, 2000, 'close')
  t.same(h.owner.messages, ['before'])
  t.equal(h.owner.closes[0]![0], 1006, 'an abnormal end: no Close came')
  check()
})

t.test('a corrupt compressed message with more input, a Close and FIN behind it, at every split: 1007 once, nothing after it delivered', async (t) => {
  const check = noUnhandled(t)
  const corrupt = frame(0x1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01]), { rsv1: true, mask: Buffer.from([1, 2, 3, 4]) })
  const bytes = Buffer.concat([corrupt, deflated('after'), frame(0x1, 'plain', { mask: Buffer.from([5, 6, 7, 8]) }), closeFrame(1000)])
  const failures: string[] = []
  for (let cut = 1; cut <= bytes.length; cut++) {
    const h = harness({}, true, reply)
    await sendSplit(h, bytes, cut, true)
    try {
      await waitFor(() => h.owner.closes.length > 0, 2000, 'close', 2)
    } catch {
      failures.push(`cut ${cut}: never closed`)
      h.server.destroy()
      continue
    }
    const closesSent = h.received().filter((f) => f.opcode === 0x8).map((f) => parseClose(f.payload).code)
    if (h.owner.messages.length !== 0 || JSON.stringify(h.owner.errors.map((e) => e[0])) !== '[1007]' || JSON.stringify(closesSent) !== '[1007]') {
      failures.push(`cut ${cut}: messages ${h.owner.messages.join(',')} errors ${JSON.stringify(h.owner.errors)} sent ${closesSent.join(',')}`)
    }
  }
  t.same(failures, [], `${bytes.length} cuts`)
  check()
})

t.test('client role: the server\'s compressed message, its Close and FIN in one write, at every split: delivered, Close echoed, TCP ended, close with the server\'s code', async (t) => {
  const check = noUnhandled(t)
  const server = (text: string): Buffer => frame(0x1, compressed(text), { rsv1: true, mask: false })
  const bytes = Buffer.concat([server('from the server'), server('and more'), closeFrame(4000, 'done', { mask: false })])
  const failures: string[] = []
  for (let cut = 1; cut <= bytes.length; cut++) {
    const [peer, local] = duplexPair()
    const chunks: Buffer[] = []
    peer.on('data', (c: Buffer) => chunks.push(c))
    let peerEnded = false
    peer.on('end', () => { peerEnded = true; peer.end() })
    const codec = new PerMessageDeflate(
      { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 },
      'client', { ...DEFAULT_DEFLATE_OPTIONS }, 1 << 20)
    const owner: Owner = { messages: [], pings: [], errors: [], closes: [], onMessage: () => {}, conn: null }
    const conn = new Connection<Owner>(local, owner, hooks, {
      isServer: false, maxPayload: 1 << 20, closeTimeout: 1000, sendHighWaterMark: 1 << 20, maxBufferedAmount: 16 << 20,
      drainTimeout: 0, inboundHighWaterMark: 1 << 20, heartbeat: null, deflate: codec
    })
    owner.conn = conn
    conn.start(null)
    peer.write(Buffer.from(bytes.subarray(0, cut)))
    await new Promise((resolve) => setImmediate(resolve))
    if (cut < bytes.length) peer.write(Buffer.from(bytes.subarray(cut)))
    peer.end()
    try {
      await waitFor(() => owner.closes.length > 0, 2000, 'close', 2)
    } catch {
      failures.push(`cut ${cut}: never closed (messages ${owner.messages.join(',')})`)
      local.destroy()
      continue
    }
    const echo = parseFrames(Buffer.concat(chunks)).frames.filter((f) => f.opcode === 0x8)
    if (owner.messages.join('|') !== 'from the server|and more' || JSON.stringify(owner.closes) !== '[[4000,"done"]]' ||
        echo.length !== 1 || !echo[0]!.masked || parseClose(echo[0]!.payload).code !== 4000 || !peerEnded) {
      failures.push(`cut ${cut}: ${owner.messages.join('|')} ${JSON.stringify(owner.closes)} echo ${echo.length} ended ${peerEnded}`)
    }
  }
  t.same(failures, [], `${bytes.length} cuts`)
  check()
})

// ---- peers that vanish ----

t.test('a peer that vanishes while its message inflates: close 1006 once, the message is not delivered after the close', async (t) => {
  const check = noUnhandled(t)
  const big = Buffer.alloc(512 * 1024, 0x61)
  for (const when of ['same turn', 'next turn']) {
    const h = harness({}, true)
    h.client.write(frame(0x2, compressed(big), { rsv1: true, mask: Buffer.from([1, 2, 3, 4]) }))
    if (when === 'next turn') await new Promise((resolve) => setImmediate(resolve))
    h.client.destroy()
    await waitFor(() => h.owner.closes.length > 0, 2000, 'close')
    const closedAt = h.owner.messages.length
    await delay(100)
    t.same(h.owner.closes.map((c) => c[0]), [1006], `${when}: close once, 1006`)
    t.equal(h.owner.messages.length, closedAt, `${when}: nothing delivered after the close`)
    t.equal(h.conn.readyState, 3)
  }
  check()
})

t.test('a peer that vanishes between its Close and our compressed reply: close once, the reply\'s callback fails', async (t) => {
  const check = noUnhandled(t)
  const results: string[] = []
  const h: Harness = harness({}, true, (conn) => {
    // Incompressible: its compression outlasts the peer, which leaves as soon as the reply is queued.
    conn.sendMessage(0x2, randomBytes(4 * 1024 * 1024), (err) => { results.push(err ? 'failed' : 'written') })
    h.client.destroy()
  })
  h.client.write(Buffer.concat([deflated('x'), closeFrame(1000)]))
  await waitFor(() => h.owner.closes.length > 0 && results.length > 0, 2000, 'close and callback')
  await delay(50)
  t.equal(h.owner.closes.length, 1, 'close once')
  t.same(results, ['failed'], 'the reply\'s callback reports the failure')
  check()
})

// ---- ending TCP behind compression ----

t.test('Sender.end() behind a message being compressed: the frame, then the queued Close, then FIN; flush callbacks in order', async (t) => {
  const [client, server] = duplexPair()
  const chunks: Buffer[] = []
  let endedAfter = -1
  client.on('data', (c: Buffer) => chunks.push(c))
  client.on('end', () => { endedAfter = parseFrames(Buffer.concat(chunks)).frames.length })
  const codec = new PerMessageDeflate(
    { serverNoContextTakeover: true, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 },
    'server', { ...DEFAULT_DEFLATE_OPTIONS, threshold: 0 }, 1 << 20)
  const sender = new Sender(server, false, null, codec)
  const order: string[] = []
  sender.sendMessage(0x2, Buffer.alloc(256 * 1024, 7), () => order.push('message'))
  sender.flush(() => order.push('flush'))
  sender.sendControl(0x8, Buffer.from([0x03, 0xe8]))
  sender.end()
  t.equal(server.writableEnded, false, 'not ended while the message compresses')
  await waitFor(() => endedAfter >= 0, 2000, 'FIN')
  const got = parseFrames(Buffer.concat(chunks)).frames
  t.same(got.map((f) => f.opcode), [0x2, 0x8], 'the compressed message, then the Close')
  t.equal(endedAfter, 2, 'FIN only after both frames')
  await waitFor(() => order.length === 2, 1000, 'callbacks')
  t.same(order, ['message', 'flush'], 'callbacks in order')
  codec.close()
})

// ---- frames that span reads ----

t.test('a masked text frame of 4-byte characters spanning reads, cut around every allocation boundary: delivered intact, UTF-8 checked across cuts', async (t) => {
  // 160,000 bytes (every 4th byte starts a character): past the first allocation (16 KiB, 64 KiB since ca54401),
  // so the buffer grows at least twice while the frame arrives.
  const text = '\u{1F600}'.repeat(40_000)
  const payload = Buffer.from(text)
  const bytes = frame(0x1, payload, { mask: Buffer.from([0xa1, 0xb2, 0xc3, 0xd4]) })
  const header = bytes.length - payload.length
  const cuts = new Set<number>()
  for (let k = 1; k <= header + 3; k++) cuts.add(k)
  for (const boundary of [16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024, payload.length]) {
    for (let d = -5; d <= 5; d++) cuts.add(header + boundary + d)
  }
  // The expected message, as RecordingHost describes payloads (length and checksum).
  const expected = new RecordingHost()
  new Receiver(expected, { isServer: true, maxPayload: 1 << 20 }).push(Buffer.from(bytes))
  t.same(expected.events, [['message', describe(payload), false]], 'in one piece: the text, intact')
  const failures: number[] = []
  for (const cut of [...cuts].filter((c) => c > 0 && c < bytes.length)) {
    for (const third of [0, 7]) {
      const host = new RecordingHost()
      const receiver = new Receiver(host, { isServer: true, maxPayload: 1 << 20 })
      const copy = Buffer.from(bytes)
      const pieces = third === 0 ? [copy.subarray(0, cut), copy.subarray(cut)] : [copy.subarray(0, cut), copy.subarray(cut, cut + third), copy.subarray(cut + third)]
      for (const p of pieces) receiver.push(p)
      if (JSON.stringify(host.events) !== JSON.stringify(expected.events) || receiver.stopped) failures.push(cut)
    }
  }
  t.same(failures, [], `${cuts.size} cut positions (two and three pieces): the same intact message each time`)
  // A cut through a character followed by an invalid continuation still fails with 1007 on the piece that carries it.
  const bad = Buffer.from(payload)
  bad[20_001] = 0x41 // inside a 4-byte sequence
  const badFrame = frame(0x1, bad, { mask: Buffer.from([1, 2, 3, 4]) })
  const h2 = new RecordingHost()
  const r2 = new Receiver(h2, { isServer: true, maxPayload: 1 << 20 })
  r2.push(badFrame.subarray(0, header + 20_000))
  t.same(h2.events, [], 'nothing reported before the bad byte arrives')
  r2.push(badFrame.subarray(header + 20_000, header + 20_010))
  t.same(h2.events.map((e) => e[0] === 'error' ? e[1] : e[0]), [1007], 'invalid UTF-8 fails on the piece that carries it')
})

t.test('a fragmented text message whose fragments span reads, with a spanning ping between them, cut at every boundary: one message, one ping', async (t) => {
  const text = 'é€'.repeat(3000) // 2- and 3-byte characters
  const all = Buffer.from(text)
  const splitAt = 4001 // inside a character: the first fragment ends mid-character
  const bytes = frames([
    { opcode: 0x1, payload: all.subarray(0, splitAt), fin: false, mask: Buffer.from([1, 2, 3, 4]) },
    { opcode: 0x9, payload: 'x'.repeat(125), mask: Buffer.from([5, 6, 7, 8]) },
    { opcode: 0x0, payload: all.subarray(splitAt), fin: true, mask: Buffer.from([9, 10, 11, 12]) }
  ])
  const expected = new RecordingHost()
  new Receiver(expected, { isServer: true, maxPayload: 1 << 20 }).push(Buffer.from(bytes))
  t.same(expected.events.map((e) => e[0]), ['ping', 'message'], 'in one piece: the ping, then the message')
  const failures: number[] = []
  for (let cut = 1; cut < bytes.length; cut += (cut < 20 || Math.abs(cut - 4010) < 150 || cut > bytes.length - 20) ? 1 : 97) {
    const host = new RecordingHost()
    const r = new Receiver(host, { isServer: true, maxPayload: 1 << 20 })
    const copy = Buffer.from(bytes)
    r.push(copy.subarray(0, cut))
    r.push(copy.subarray(cut))
    if (JSON.stringify(host.events) !== JSON.stringify(expected.events)) failures.push(cut)
  }
  t.same(failures, [], 'every cut gives the same ping and message')
})

// ---- the queues' own bookkeeping ----

t.test('held messages: a queue that is never empty keeps its slot array bounded', async (t) => {
  const held = new HeldMessages()
  let peak = 0
  held.push(Buffer.from('a'), false, 1)
  for (let i = 0; i < 100_000; i++) {
    held.push(Buffer.from('b'), false, 1)
    held.shift()
    peak = Math.max(peak, (held as unknown as { items: unknown[] }).items.length)
  }
  t.equal(held.length, 1, 'one message held throughout')
  t.ok(peak < 4096, `at most ${peak} slots for 100,000 messages through a queue of one`)
  t.equal(held.bytes, 1 + 320, 'the count is exactly the one message held')
})

t.test('fixed: the inflate backlog queue keeps a slot per chunk for as long as it never empties completely', async (t) => {
  let pending: ((err: null, data: Buffer) => void) | null = null
  const fakeCodec = { decompress (_data: Buffer, cb: (err: null, data: Buffer) => void) { pending = cb } } as unknown as PerMessageDeflate
  const host = new RecordingHost()
  let backlog = 0
  host.onBacklog = (bytes: number) => { backlog = bytes }
  const receiver = new Receiver(host, { isServer: true, maxPayload: 1 << 20, deflate: fakeCodec })
  const message = frame(0x2, Buffer.from([1, 2, 3]), { rsv1: true, mask: Buffer.from([1, 2, 3, 4]) })
  receiver.push(Buffer.from(message)) // inflating
  receiver.push(Buffer.from(message)) // waits
  let peak = 0
  for (let i = 0; i < 100_000; i++) {
    receiver.push(Buffer.from(message)) // one more read arrives...
    const done = pending!
    pending = null
    done(null, Buffer.from('x')) // ...while one message finishes inflating and the next one starts
    peak = Math.max(peak, (receiver as unknown as { queued: unknown[] }).queued.length)
  }
  t.equal(host.events.length, 100_000, 'every message delivered')
  t.ok(backlog < 64, `the backlog itself stays small (${backlog} bytes)`)
  t.ok(peak < 4096, `the queue array stays bounded (peak ${peak} slots for a backlog of two chunks)`)
})
