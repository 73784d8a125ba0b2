// Autobahn-style frame cases over HTTP/2 streams (RFC 8441): the frame layer must not care what carries it. Each
// case runs on a fresh stream of one shared session against an echo route, and must end as it would over TCP
// (echoed, or closed with the RFC 6455 code); after every case a sibling stream still echoes, so no frame-level
// failure reaches the session. Groups follow the Autobahn TestSuite's numbering (1 framing, 2 pings/pongs,
// 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close, 9 sizes, 12 compression).
import t from 'tap'
import { deflateRawSync, inflateRawSync, constants as zlib } from 'node:zlib'
import type { FastifyServerOptions } from 'fastify'
import { buildApp, listen, within, frame, frames, closeFrame, closePayload } from '../helpers/index.js'
import { connectH2, openH2Ws, type H2Ws } from '../helpers/http2-client.js'

type Expect = { echo: Array<string | Buffer> } | { close: number }

interface Case { id: string, what: string, bytes: () => Buffer, expect: Expect, deflate?: boolean }

const text = (s: string): Buffer => frame(0x1, s)
const bin = (b: Buffer): Buffer => frame(0x2, b)
const utf8 = (s: string): Buffer => Buffer.from(s)

/** A compressed text message (RSV1), as a client with permessage-deflate sends it. */
function compressed (s: string): Buffer {
  const raw = deflateRawSync(Buffer.from(s), { finishFlush: zlib.Z_SYNC_FLUSH })
  return frame(0x1, raw.subarray(0, raw.length - 4), { rsv1: true })
}

const CASES: Case[] = [
  { id: '1.1.1', what: 'empty text', bytes: () => text(''), expect: { echo: [''] } },
  { id: '1.1.2', what: '125-byte text', bytes: () => text('*'.repeat(125)), expect: { echo: ['*'.repeat(125)] } },
  { id: '1.1.3', what: '126-byte text (16-bit length)', bytes: () => text('*'.repeat(126)), expect: { echo: ['*'.repeat(126)] } },
  { id: '1.1.5', what: '65,535-byte text', bytes: () => text('*'.repeat(65535)), expect: { echo: ['*'.repeat(65535)] } },
  { id: '1.1.6', what: '65,536-byte text (64-bit length)', bytes: () => text('*'.repeat(65536)), expect: { echo: ['*'.repeat(65536)] } },
  { id: '1.2.8', what: '65,536-byte binary', bytes: () => bin(Buffer.alloc(65536, 0xfe)), expect: { echo: [Buffer.alloc(65536, 0xfe)] } },
  { id: '2.1', what: 'empty ping', bytes: () => Buffer.concat([frame(0x9, ''), text('after ping')]), expect: { echo: ['after ping'] } },
  { id: '2.3', what: '125-byte ping', bytes: () => Buffer.concat([frame(0x9, Buffer.alloc(125, 1)), text('ok')]), expect: { echo: ['ok'] } },
  { id: '2.5', what: '126-byte ping', bytes: () => frame(0x9, Buffer.alloc(126, 1)), expect: { close: 1002 } },
  { id: '2.6', what: 'unsolicited pong', bytes: () => Buffer.concat([frame(0xA, 'unasked'), text('still here')]), expect: { echo: ['still here'] } },
  { id: '3.1', what: 'RSV1 without an extension', bytes: () => frame(0x1, 'x', { rsv1: true }), expect: { close: 1002 } },
  { id: '3.2', what: 'RSV2', bytes: () => frame(0x1, 'x', { rsv2: true }), expect: { close: 1002 } },
  { id: '3.3', what: 'RSV3 on a ping', bytes: () => frame(0x9, '', { rsv3: true }), expect: { close: 1002 } },
  { id: '4.1.1', what: 'reserved data opcode 3', bytes: () => frame(0x3, ''), expect: { close: 1002 } },
  { id: '4.2.1', what: 'reserved control opcode 11', bytes: () => frame(0xB, ''), expect: { close: 1002 } },
  {
    id: '5.3',
    what: 'text in two fragments',
    bytes: () => frames([{ opcode: 0x1, payload: 'frag', fin: false }, { opcode: 0x0, payload: 'mented' }]),
    expect: { echo: ['fragmented'] }
  },
  {
    id: '5.6',
    what: 'a ping between fragments',
    bytes: () => frames([{ opcode: 0x1, payload: 'a', fin: false }, { opcode: 0x9, payload: 'p' }, { opcode: 0x0, payload: 'b' }]),
    expect: { echo: ['ab'] }
  },
  { id: '5.1', what: 'fragmented ping', bytes: () => frame(0x9, 'p', { fin: false }), expect: { close: 1002 } },
  { id: '5.9', what: 'continuation without a start', bytes: () => frame(0x0, 'x'), expect: { close: 1002 } },
  {
    id: '5.18',
    what: 'a new text frame inside a fragmented message',
    bytes: () => frames([{ opcode: 0x1, payload: 'a', fin: false }, { opcode: 0x1, payload: 'b' }]),
    expect: { close: 1002 }
  },
  { id: '6.2.1', what: 'valid multi-byte UTF-8', bytes: () => text('κόσμε ✓ 𝄞'), expect: { echo: ['κόσμε ✓ 𝄞'] } },
  {
    id: '6.2.3',
    what: 'a code point split across fragments',
    bytes: () => frames([{ opcode: 0x1, payload: utf8('𝄞').subarray(0, 2), fin: false }, { opcode: 0x0, payload: utf8('𝄞').subarray(2) }]),
    expect: { echo: ['𝄞'] }
  },
  { id: '6.3.1', what: 'invalid UTF-8', bytes: () => frame(0x1, Buffer.from([0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80])), expect: { close: 1007 } },
  { id: '6.4.1', what: 'invalid UTF-8 in a later fragment', bytes: () => frames([{ opcode: 0x1, payload: 'ok', fin: false }, { opcode: 0x0, payload: Buffer.from([0xf4, 0x90, 0x80, 0x80]) }]), expect: { close: 1007 } },
  { id: '7.1.1', what: 'Close 1000', bytes: () => closeFrame(1000), expect: { close: 1000 } },
  { id: '7.3.1', what: 'Close without payload', bytes: () => closeFrame(), expect: { close: 1005 } },
  { id: '7.3.2', what: 'Close with a 1-byte payload', bytes: () => frame(0x8, Buffer.from([0x03])), expect: { close: 1002 } },
  { id: '7.3.5', what: 'Close with a 123-byte reason', bytes: () => closeFrame(1000, 'r'.repeat(123)), expect: { close: 1000 } },
  { id: '7.3.6', what: 'Close with a 124-byte reason (control frame over 125)', bytes: () => frame(0x8, closePayload(1000, 'r'.repeat(124))), expect: { close: 1002 } },
  { id: '7.5.1', what: 'Close reason with invalid UTF-8', bytes: () => frame(0x8, Buffer.concat([closePayload(1000), Buffer.from([0xce, 0xba, 0xed, 0xa0, 0x80])])), expect: { close: 1007 } },
  ...[1000, 1001, 1002, 1003, 1007, 1011, 3000, 4999].map((code): Case => ({ id: '7.7', what: `Close code ${code}`, bytes: () => closeFrame(code), expect: { close: code } })),
  ...[0, 999, 1004, 1005, 1006, 1016, 2000, 2999, 5000].map((code): Case => ({ id: '7.9', what: `invalid Close code ${code}`, bytes: () => closeFrame(code), expect: { close: 1002 } })),
  { id: '9.2.3', what: '1 MiB binary (the default maxPayload)', bytes: () => bin(Buffer.alloc(1 << 20, 9)), expect: { echo: [Buffer.alloc(1 << 20, 9)] } },
  { id: '9.x', what: 'over maxPayload', bytes: () => bin(Buffer.alloc((1 << 20) + 1)), expect: { close: 1009 } },
  { id: '12.1', what: 'compressed text', deflate: true, bytes: () => compressed('hello, compressed over h2'), expect: { echo: ['hello, compressed over h2'] } },
  { id: '12.2', what: 'compressed, 64 KiB of text', deflate: true, bytes: () => compressed('abc'.repeat(21846)), expect: { echo: ['abc'.repeat(21846)] } }
]

async function messageText (ws: H2Ws): Promise<Buffer> {
  const f = await ws.nextMessage(10_000)
  if (!f.rsv1) return f.payload
  return inflateRawSync(Buffer.concat([f.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.Z_SYNC_FLUSH })
}

t.test('Autobahn-style cases over HTTP/2 streams', async (t) => {
  const { app } = await buildApp({ perMessageDeflate: { threshold: 0 } }, { http2: true } as unknown as FastifyServerOptions)
  app.get('/echo', { websocket: true }, (socket) => {
    socket.on('error', () => {})
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
  })
  const port = await listen(app)
  t.teardown(() => within(app.close(), 10_000, 'app.close()'))
  const { session } = await connectH2(`http://127.0.0.1:${port}`)
  t.teardown(() => { session.destroy() })
  const authority = `127.0.0.1:${port}`
  const sibling = await openH2Ws(session, authority, '/echo', 'http')
  for (const c of CASES) {
    const ws = await openH2Ws(session, authority, '/echo', 'http', c.deflate === true ? { 'sec-websocket-extensions': 'permessage-deflate' } : {})
    ws.stream.write(c.bytes())
    if ('echo' in c.expect) {
      for (const expected of c.expect.echo) {
        const got = await messageText(ws)
        t.ok(got.equals(typeof expected === 'string' ? Buffer.from(expected) : expected), `${c.id} ${c.what}: echoed`)
      }
      ws.close(1000, '', false)
    }
    await ws.waitClosed(10_000)
    t.equal(ws.closeCode, 'close' in c.expect ? c.expect.close : 1000, `${c.id} ${c.what}: close code`)
    sibling.send(c.id)
    t.equal((await sibling.nextMessage()).payload.toString(), c.id, `${c.id}: the sibling stream still echoes`)
  }
  t.equal(session.closed || session.destroyed, false, 'one session carried every case')
})
