import t from 'tap'
import zlib from 'node:zlib'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { parseExtensions, type ExtensionOffer } from '../../lib/http/extension-header.js'
import { PerMessageDeflate, type InflateError } from '../../lib/extensions/permessage-deflate/codec.js'
import { negotiateServer, clientOffer, acceptClientResponse } from '../../lib/extensions/permessage-deflate/negotiation.js'
import {
  DEFAULT_DEFLATE_OPTIONS, type PerMessageDeflateOptions, type NegotiatedDeflate
} from '../../lib/extensions/permessage-deflate/options.js'
import { validateDeflateOptions } from '../../lib/plugin/options.js'
import { Limiter, getLimiter } from '../../lib/extensions/permessage-deflate/limiter.js'

type Opts = Required<PerMessageDeflateOptions>
const opts = (o: PerMessageDeflateOptions = {}): Opts => validateDeflateOptions(o, 'perMessageDeflate')
const offers = (header: string): ExtensionOffer[] => {
  const parsed = parseExtensions(header)
  if (parsed === null) throw new Error(`unparsable test header ${header}`)
  return parsed
}
const MiB = 1024 * 1024

function compress (pmd: PerMessageDeflate, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    pmd.compress(data, (err, out) => { if (err !== null) reject(err); else resolve(out as Buffer) })
  })
}
function decompress (pmd: PerMessageDeflate, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    pmd.decompress(data, (err, out) => { if (err !== null) reject(err); else resolve(out as Buffer) })
  })
}
function decompressError (pmd: PerMessageDeflate, data: Buffer): Promise<InflateError> {
  return new Promise((resolve, reject) => {
    pmd.decompress(data, (err) => { if (err !== null) resolve(err); else reject(new Error('expected an error')) })
  })
}

// Deterministic, compressible test data: pseudo-random words (seeded LCG), or incompressible bytes.
function prng (seed: number): () => number {
  let s = seed >>> 0
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296
}
const WORDS = 'the quick brown fox jumps over lazy dog websocket frame message deflate window context ' +
  'takeover server client payload {"id":42,"ok":true} lorem ipsum dolor sit amet'
const WORD_LIST = WORDS.split(' ')
function text (size: number, seed: number): Buffer {
  const rnd = prng(seed)
  const parts: string[] = []
  let length = 0
  while (length < size) {
    const w = WORD_LIST[Math.floor(rnd() * WORD_LIST.length)] + ' '
    parts.push(w)
    length += w.length
  }
  return Buffer.from(parts.join('').slice(0, size))
}
function noise (size: number, seed: number): Buffer {
  const rnd = prng(seed)
  const b = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) b[i] = Math.floor(rnd() * 256)
  return b
}

/** Inflate one message compressed without context takeover, with zlib directly. */
function inflateAlone (payload: Buffer): Buffer {
  return zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
}

/** Negotiate through real header strings, as a client and a server would. */
function handshake (clientOpts: Opts, serverOpts: Opts): { server: NegotiatedDeflate, client: NegotiatedDeflate, response: string } {
  const offer = clientOffer(clientOpts)
  const accepted = negotiateServer(offers(offer), serverOpts)
  if (accepted === null) throw new Error(`server declined ${offer}`)
  const client = acceptClientResponse(offers(accepted.response), clientOpts)
  if (client === null) throw new Error(`client refused ${accepted.response}`)
  return { server: accepted.params, client, response: accepted.response }
}

t.test('validateDeflateOptions', async (t) => {
  t.same(opts(), DEFAULT_DEFLATE_OPTIONS)
  t.same(validateDeflateOptions(true, 'x'), DEFAULT_DEFLATE_OPTIONS)
  t.same(validateDeflateOptions(undefined, 'x'), DEFAULT_DEFLATE_OPTIONS)
  t.same(DEFAULT_DEFLATE_OPTIONS, {
    threshold: 1024,
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
    level: 1,
    memLevel: 8,
    concurrency: 10
  })
  const all = {
    threshold: 0,
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
    serverMaxWindowBits: 8,
    clientMaxWindowBits: 9,
    level: 9,
    memLevel: 1,
    concurrency: 1
  }
  t.same(opts(all), all)
  t.not(opts(all), all, 'a copy')
  t.equal(opts({ threshold: Infinity }).threshold, Infinity)
  t.equal(opts({ level: -1 }).level, -1)

  const bad: Array<[unknown, string]> = [
    [null, 'perMessageDeflate'],
    [false, 'perMessageDeflate'],
    ['yes', 'perMessageDeflate'],
    [[], 'perMessageDeflate'],
    [{ treshold: 10 }, 'perMessageDeflate.treshold'],
    [{ threshold: -1 }, 'perMessageDeflate.threshold'],
    [{ threshold: 1.5 }, 'perMessageDeflate.threshold'],
    [{ threshold: '1024' }, 'perMessageDeflate.threshold'],
    [{ threshold: NaN }, 'perMessageDeflate.threshold'],
    [{ serverNoContextTakeover: 1 }, 'perMessageDeflate.serverNoContextTakeover'],
    [{ clientNoContextTakeover: 'true' }, 'perMessageDeflate.clientNoContextTakeover'],
    [{ serverMaxWindowBits: 7 }, 'perMessageDeflate.serverMaxWindowBits'],
    [{ serverMaxWindowBits: 16 }, 'perMessageDeflate.serverMaxWindowBits'],
    [{ clientMaxWindowBits: 10.5 }, 'perMessageDeflate.clientMaxWindowBits'],
    [{ clientMaxWindowBits: null }, 'perMessageDeflate.clientMaxWindowBits'],
    [{ level: 10 }, 'perMessageDeflate.level'],
    [{ level: -2 }, 'perMessageDeflate.level'],
    [{ memLevel: 0 }, 'perMessageDeflate.memLevel'],
    [{ memLevel: 10 }, 'perMessageDeflate.memLevel'],
    [{ concurrency: 0 }, 'perMessageDeflate.concurrency'],
    [{ concurrency: Infinity }, 'perMessageDeflate.concurrency'],
    [{ concurrency: {} }, 'perMessageDeflate.concurrency']
  ]
  for (const [value, name] of bad) {
    t.throws(() => validateDeflateOptions(value, 'perMessageDeflate'),
      { code: 'FST_WS_INVALID_OPTION', message: new RegExp(`"${name.replace('.', '\\.')}"`) },
      JSON.stringify(value) ?? String(value))
  }
  try {
    validateDeflateOptions({ level: 99 }, 'perMessageDeflate')
    t.fail('should throw')
  } catch (err) {
    t.ok(err instanceof TypeError, 'a TypeError (FastifyError from lib/errors.ts)')
  }
  t.throws(() => validateDeflateOptions({ level: 'x' }, 'routes./a.perMessageDeflate'),
    { message: /routes\.\/a\.perMessageDeflate\.level.*"x"/ }, 'prefix and value in the message')
})

t.test('negotiateServer', async (t) => {
  const defaults = opts()
  const neg = (header: string, o: Opts = defaults): ReturnType<typeof negotiateServer> => negotiateServer(offers(header), o)

  t.test('plain offer', async (t) => {
    t.same(neg('permessage-deflate'), {
      params: { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 },
      response: 'permessage-deflate'
    })
    t.equal(neg(''), null, 'no offer')
    t.equal(neg('x-webkit-deflate-frame, foo'), null, 'only other extensions')
    t.equal(neg('foo, permessage-deflate')?.response, 'permessage-deflate', 'other extensions are skipped')
  })

  t.test('client_max_window_bits with and without a value', async (t) => {
    t.same(neg('permessage-deflate; client_max_window_bits'), {
      params: { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 },
      response: 'permessage-deflate'
    }, 'no value, no limit of ours: nothing to say')
    t.same(neg('permessage-deflate; client_max_window_bits', opts({ clientMaxWindowBits: 10 })), {
      params: { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 10 },
      response: 'permessage-deflate; client_max_window_bits=10'
    }, 'our limit is sent')
    t.same(neg('permessage-deflate; client_max_window_bits=12')?.response,
      'permessage-deflate; client_max_window_bits=12', 'the client value is echoed')
    t.same(neg('permessage-deflate; client_max_window_bits=12', opts({ clientMaxWindowBits: 10 }))?.params.clientMaxWindowBits,
      10, 'the smaller of both')
    t.same(neg('permessage-deflate; client_max_window_bits=9', opts({ clientMaxWindowBits: 10 }))?.response,
      'permessage-deflate; client_max_window_bits=9')
    t.same(neg('permessage-deflate; client_max_window_bits="11"')?.params.clientMaxWindowBits, 11, 'quoted value')
    t.equal(neg('permessage-deflate', opts({ clientMaxWindowBits: 10 })), null,
      'we must limit the client but it cannot be told: declined')
    t.equal(neg('permessage-deflate, permessage-deflate; client_max_window_bits', opts({ clientMaxWindowBits: 10 }))?.response,
      'permessage-deflate; client_max_window_bits=10', 'the next offer that can be limited is taken')
  })

  t.test('server_max_window_bits', async (t) => {
    t.same(neg('permessage-deflate; server_max_window_bits=10'), {
      params: { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 10, clientMaxWindowBits: 15 },
      response: 'permessage-deflate; server_max_window_bits=10'
    })
    t.equal(neg('permessage-deflate; server_max_window_bits=15')?.response,
      'permessage-deflate; server_max_window_bits=15', 'always echoed when offered')
    t.equal(neg('permessage-deflate; server_max_window_bits=12', opts({ serverMaxWindowBits: 10 }))?.response,
      'permessage-deflate; server_max_window_bits=10', 'ours is smaller: ours')
    t.equal(neg('permessage-deflate; server_max_window_bits=9', opts({ serverMaxWindowBits: 10 }))?.response,
      'permessage-deflate; server_max_window_bits=9', 'theirs is smaller: theirs')
    t.equal(neg('permessage-deflate', opts({ serverMaxWindowBits: 11 }))?.response,
      'permessage-deflate; server_max_window_bits=11', 'sent unasked when we limit ourselves')
    t.equal(neg('permessage-deflate; server_max_window_bits=8')?.params.serverMaxWindowBits, 8,
      'the smallest window is honoured (compressed with 9, see the window-8 test)')
    for (const v of ['7', '0', '16', '08', '010', '1', '-9', '9.0', 'x', '"7"']) {
      t.equal(neg(`permessage-deflate; server_max_window_bits=${v}`), null, `out of range or malformed: ${v}`)
      t.equal(neg(`permessage-deflate; client_max_window_bits=${v}`), null, `client_max_window_bits=${v}`)
    }
    t.equal(neg('permessage-deflate; server_max_window_bits'), null, 'value required')
  })

  t.test('context takeover', async (t) => {
    t.same(neg('permessage-deflate; server_no_context_takeover; client_no_context_takeover'), {
      params: { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 15, clientMaxWindowBits: 15 },
      response: 'permessage-deflate; server_no_context_takeover; client_no_context_takeover'
    })
    t.same(neg('permessage-deflate', opts({ serverNoContextTakeover: true, clientNoContextTakeover: true }))?.response,
      'permessage-deflate; server_no_context_takeover; client_no_context_takeover', 'ours, unasked')
    t.equal(neg('permessage-deflate; server_no_context_takeover=1'), null, 'no value allowed')
    t.equal(neg('permessage-deflate; client_no_context_takeover="x"'), null, 'no value allowed')
  })

  t.test('declined offers: unknown and duplicate parameters; the next offer is tried', async (t) => {
    t.equal(neg('permessage-deflate; foo'), null)
    t.equal(neg('permessage-deflate; Server_No_Context_Takeover'), null, 'names are case-sensitive')
    t.equal(neg('permessage-deflate; server_no_context_takeover; server_no_context_takeover'), null)
    t.equal(neg('permessage-deflate; client_max_window_bits; client_max_window_bits=10'), null)
    t.equal(neg('permessage-deflate; server_max_window_bits=10; server_max_window_bits=10'), null)
    t.same(neg('permessage-deflate; foo, permessage-deflate; server_max_window_bits=7, ' +
      'permessage-deflate; server_max_window_bits=10; client_max_window_bits, permessage-deflate'), {
      params: { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 10, clientMaxWindowBits: 15 },
      response: 'permessage-deflate; server_max_window_bits=10'
    }, 'first acceptable of four')
    t.equal(neg('permessage-deflate; x=1, permessage-deflate; server_max_window_bits=99'), null, 'all malformed')
  })

  t.test('Autobahn 13.x offers', async (t) => {
    // (no_context_takeover, max_window_bits) pairs of the client offers in case groups 13.1-13.7
    t.equal(neg('permessage-deflate')?.response, 'permessage-deflate')
    t.equal(neg('permessage-deflate; client_no_context_takeover')?.response,
      'permessage-deflate; client_no_context_takeover')
    t.equal(neg('permessage-deflate; client_max_window_bits=8')?.response, 'permessage-deflate; client_max_window_bits=8')
    t.equal(neg('permessage-deflate; client_max_window_bits=15')?.response, 'permessage-deflate; client_max_window_bits=15')
    t.equal(neg('permessage-deflate; client_no_context_takeover; client_max_window_bits=8')?.response,
      'permessage-deflate; client_no_context_takeover; client_max_window_bits=8')
    t.equal(neg('permessage-deflate; client_no_context_takeover; client_max_window_bits=8, ' +
      'permessage-deflate; client_no_context_takeover, permessage-deflate')?.response,
    'permessage-deflate; client_no_context_takeover; client_max_window_bits=8')
  })
})

t.test('clientOffer and acceptClientResponse', async (t) => {
  t.equal(clientOffer(opts()), 'permessage-deflate; client_max_window_bits')
  t.equal(clientOffer(opts({ serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 9 })),
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9')

  const acc = (header: string, o: Opts = opts()): NegotiatedDeflate | null => acceptClientResponse(offers(header), o)
  t.same(acc('permessage-deflate'),
    { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 })
  t.same(acc('permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11'),
    { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 11 })
  t.same(acc('permessage-deflate', opts({ clientNoContextTakeover: true, clientMaxWindowBits: 10 })),
    { serverNoContextTakeover: false, clientNoContextTakeover: true, serverMaxWindowBits: 15, clientMaxWindowBits: 10 },
    'our own limits apply even when the server says nothing')
  t.equal(acc('permessage-deflate; client_max_window_bits=12', opts({ clientMaxWindowBits: 10 }))?.clientMaxWindowBits, 10)
  t.equal(acc('permessage-deflate; server_max_window_bits=10', opts({ serverMaxWindowBits: 10 }))?.serverMaxWindowBits, 10)
  t.equal(acc('permessage-deflate', opts({ serverMaxWindowBits: 10 }))?.serverMaxWindowBits, 15,
    'server did not echo our limit: inflate with the largest window')

  const refused = [
    'permessage-deflate; client_max_window_bits', // a value is required in a response
    'permessage-deflate; server_max_window_bits',
    'permessage-deflate; server_max_window_bits=16',
    'permessage-deflate; foo',
    'permessage-deflate; server_no_context_takeover; server_no_context_takeover',
    'permessage-deflate, permessage-deflate',
    'permessage-deflate, foo',
    'foo',
    ''
  ]
  for (const h of refused) t.equal(acc(h), null, JSON.stringify(h))
  t.equal(acc('permessage-deflate; server_max_window_bits=12', opts({ serverMaxWindowBits: 10 })), null,
    'larger server window than we asked for')
})

t.test('round trips: every window size 9..15 with and without context takeover, 16 B to 256 KiB', async (t) => {
  const sizes = [16, 64, 256, 1024, 4096, 16384, 65536, 131072, 262144]
  for (let bits = 9; bits <= 15; bits++) {
    for (const noTakeover of [false, true]) {
      const o = opts({
        serverMaxWindowBits: bits,
        clientMaxWindowBits: bits,
        serverNoContextTakeover: noTakeover,
        clientNoContextTakeover: noTakeover
      })
      const neg = handshake(o, o)
      t.same(neg.server, neg.client, `bits=${bits} noTakeover=${noTakeover}: both sides agree`)
      t.same(neg.server, {
        serverNoContextTakeover: noTakeover, clientNoContextTakeover: noTakeover, serverMaxWindowBits: bits, clientMaxWindowBits: bits
      })
      const server = new PerMessageDeflate(neg.server, 'server', o, 1 << 20)
      const client = new PerMessageDeflate(neg.client, 'client', o, 1 << 20)
      let ok = 0
      let total = 0
      for (const [i, size] of sizes.entries()) {
        for (const data of [text(size, bits * 100 + i), noise(Math.min(size, 4096), i)]) {
          const down = await compress(server, data)
          const up = await compress(client, data)
          if ((await decompress(client, down)).equals(data) && (await decompress(server, up)).equals(data)) ok++
          total++
        }
      }
      t.equal(ok, total, `bits=${bits} noTakeover=${noTakeover}: ${total} messages each way`)
      server.close()
      client.close()
    }
  }
})

t.test('mixed parameters in each direction', async (t) => {
  // The client may not take over but the server may, with different windows per direction.
  const serverOpts = opts({ clientNoContextTakeover: true, clientMaxWindowBits: 10 })
  const clientOpts = opts({ serverMaxWindowBits: 12 })
  const neg = handshake(clientOpts, serverOpts)
  t.equal(neg.response, 'permessage-deflate; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=10')
  t.same(neg.server, neg.client)
  const server = new PerMessageDeflate(neg.server, 'server', serverOpts, MiB)
  const client = new PerMessageDeflate(neg.client, 'client', clientOpts, MiB)
  for (let i = 0; i < 20; i++) {
    const data = text(3000 + i * 997, i)
    t.ok((await decompress(client, await compress(server, data))).equals(data))
    t.ok((await decompress(server, await compress(client, data))).equals(data))
  }
  server.close()
  client.close()
})

t.test('context takeover: a repeated message compresses smaller the second time', async (t) => {
  const msg = text(2000, 7)
  for (const noTakeover of [false, true]) {
    const o = opts({ serverNoContextTakeover: noTakeover })
    const neg = handshake(o, o)
    const server = new PerMessageDeflate(neg.server, 'server', o, MiB)
    const client = new PerMessageDeflate(neg.client, 'client', o, MiB)
    const first = await compress(server, msg)
    const second = await compress(server, msg)
    if (noTakeover) {
      t.same(second, first, 'without takeover every message is compressed from scratch')
    } else {
      t.ok(second.length < first.length / 2, `with takeover: ${first.length} then ${second.length} bytes`)
    }
    t.ok((await decompress(client, first)).equals(msg))
    t.ok((await decompress(client, second)).equals(msg), 'the second needs the first one\'s window (when taken over)')
    server.close()
    client.close()
  }
})

t.test('compressed format', async (t) => {
  const neg = handshake(opts(), opts())
  const server = new PerMessageDeflate(neg.server, 'server', opts(), MiB)
  const client = new PerMessageDeflate(neg.client, 'client', opts(), MiB)
  const empty = await compress(server, Buffer.alloc(0))
  t.same([...empty], [0x00], 'an empty message is a single 0x00 (RFC 7692 §7.2.3.6)')
  t.equal((await decompress(client, empty)).length, 0)
  t.equal((await decompress(client, Buffer.alloc(0))).length, 0, 'an empty payload inflates to nothing')
  t.equal((await decompress(client, Buffer.alloc(0))).length, 0, '... and leaves the context usable')
  const hello = await compress(server, Buffer.from('Hello'))
  // RFC 7692 §7.2.3.1 example: without takeover "Hello" is f2 48 cd c9 c9 07 00
  t.same([...hello], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
  t.equal(inflateAlone(hello).toString(), 'Hello')
  t.equal((await decompress(client, Buffer.from([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]))).toString(), 'Hello')
  // §7.2.3.2: the second "Hello" with the window taken over
  t.equal((await decompress(client, Buffer.from([0xf2, 0x00, 0x11, 0x00, 0x00]))).toString(), 'Hello')
  // §7.2.3.3: a stored (uncompressed) block
  t.equal((await decompress(client, Buffer.from([0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]))).toString(), 'Hello')
  server.close()
  client.close()
})

t.test('a block with BFINAL set ends the zlib stream; the next message still inflates', async (t) => {
  const client = new PerMessageDeflate(handshake(opts(), opts()).client, 'client', opts(), MiB)
  // RFC 7692 §7.2.3.4 example: "Hello" in a final block
  t.equal((await decompress(client, Buffer.from([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]))).toString(), 'Hello')
  const final = zlib.deflateRawSync(Buffer.from('finished'))
  t.equal((await decompress(client, final)).toString(), 'finished')
  t.equal((await decompress(client, Buffer.from([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]))).toString(), 'Hello')
  t.equal((await decompress(client, Buffer.from([0xf2, 0x00, 0x11, 0x00, 0x00]))).toString(), 'Hello',
    'context taken over again from the message after the final block')
  client.close()
})

t.test('window 8: compressed with zlib window 9, which fits a 256-byte window', async (t) => {
  const serverOpts = opts()
  const clientOpts = opts({ serverMaxWindowBits: 8, clientMaxWindowBits: 8 })
  const neg = handshake(clientOpts, serverOpts)
  t.equal(neg.response, 'permessage-deflate; server_max_window_bits=8; client_max_window_bits=8')
  const server = new PerMessageDeflate(neg.server, 'server', serverOpts, MiB)
  const client = new PerMessageDeflate(neg.client, 'client', clientOpts, MiB)
  // Repeats at distances between 250 and 512 bytes: a true 512-byte window would reference them.
  t.equal(neg.client.serverMaxWindowBits, 8, 'so the client inflates with an 8-bit window')
  t.equal(neg.server.clientMaxWindowBits, 8, 'and so does the server')
  // zlib's inflate only enforces its window on what it keeps between calls (output still in its buffer may be
  // referenced too): a 64-byte output buffer makes a 256-byte window strict to within 64 bytes.
  const strictInflate = (payload: Buffer): Buffer => zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]),
    { windowBits: 8, chunkSize: 64, finishFlush: zlib.constants.Z_SYNC_FLUSH })
  const alone = new PerMessageDeflate({ ...neg.server, serverNoContextTakeover: true }, 'server', serverOpts, MiB)
  let checked = 0
  for (let period = 240; period <= 520; period += 20) {
    const block = noise(period, period)
    const data = Buffer.concat([block, block, block, block])
    const out = await compress(server, data)
    t.ok(out.length < data.length, `period ${period}: compressed to ${out.length} bytes`)
    t.ok((await decompress(client, out)).equals(data), 'inflated with a 256-byte window, context taken over')
    t.ok((await decompress(server, await compress(client, data))).equals(data))
    t.ok(strictInflate(await compress(alone, data)).equals(data), 'inflated with a strict 256-byte window')
    checked++
  }
  t.equal(checked, 15)
  // Negative control: the same kind of data compressed with a 32 KiB window does not fit the strict window.
  const block = noise(400, 1)
  const wide = zlib.deflateRawSync(Buffer.concat([block, block]), { windowBits: 15, finishFlush: zlib.constants.Z_SYNC_FLUSH })
  t.throws(() => strictInflate(wide.subarray(0, wide.length - 4)), /invalid distance too far back/, 'distance 400 refused')
  alone.close()
  server.close()
  client.close()
})

t.test('corrupt data fails with 1007', async (t) => {
  const neg = handshake(opts(), opts())
  const bad = [
    Buffer.from([0xff, 0xff, 0xff, 0xff]), // invalid block type 3
    Buffer.from([0x00, 0x05, 0x00, 0x00, 0x00]), // stored block with LEN/NLEN mismatch
    Buffer.from([0xf2, 0x00, 0x11, 0x00, 0x00]) // a back-reference into an empty window
  ]
  for (const data of bad) {
    const client = new PerMessageDeflate(neg.client, 'client', opts(), MiB)
    const err = await decompressError(client, data)
    t.equal(err.closeCode, 1007, err.message)
    t.match(err.message, /^Invalid compressed data: /)
    client.close()
  }

  t.test('a back-reference beyond the negotiated window, into the previous message', async (t) => {
    const o = opts({ clientMaxWindowBits: 9 })
    const neg = handshake(o, o)
    t.equal(neg.server.clientMaxWindowBits, 9)
    const server = new PerMessageDeflate(neg.server, 'server', o, MiB)
    // a misbehaving client that compresses with a 32 KiB window anyway
    const client = new PerMessageDeflate({ ...neg.client, clientMaxWindowBits: 15 }, 'client', o, MiB)
    const block = noise(4000, 1)
    t.ok((await decompress(server, await compress(client, block))).equals(block))
    const err = await decompressError(server, await compress(client, block))
    t.equal(err.closeCode, 1007)
    t.match(err.message, /too far back/)
    server.close()
    client.close()
  })

  t.test('later messages on the same instance are still answered', async (t) => {
    const client = new PerMessageDeflate(neg.client, 'client', opts(), MiB)
    const results: Array<number | string> = []
    await new Promise<void>((resolve) => {
      client.decompress(Buffer.from([0xff, 0xff]), (err) => { results.push(err?.closeCode ?? 'ok') })
      client.decompress(Buffer.from([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), (err, out) => {
        results.push(err === null ? (out as Buffer).toString() : err.closeCode)
        resolve()
      })
    })
    t.same(results, [1007, 'Hello'], 'a fresh context after the failure (the socket is to be failed anyway)')
    client.close()
  })
})

/** Raw DEFLATE of `size` zero bytes, produced without holding `size` bytes in memory. */
async function zeroBomb (size: number): Promise<Buffer> {
  const d = zlib.createDeflateRaw({ level: 9 })
  const chunks: Buffer[] = []
  d.on('data', (c: Buffer) => chunks.push(c))
  const zeros = Buffer.alloc(MiB)
  for (let i = 0; i < size / MiB; i++) d.write(zeros)
  await new Promise<void>((resolve) => d.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()))
  d.close()
  const out = Buffer.concat(chunks)
  return out.subarray(0, out.length - 4)
}

t.test('maxPayload is enforced while inflating', async (t) => {
  const neg = handshake(opts(), opts())

  t.test('exactly at the limit passes, one byte over fails with 1009', async (t) => {
    const server = new PerMessageDeflate(neg.server, 'server', opts(), MiB)
    const limit = 100000
    const client = new PerMessageDeflate(neg.client, 'client', opts(), limit)
    t.equal((await decompress(client, await compress(server, text(limit, 1)))).length, limit)
    const err = await decompressError(client, await compress(server, text(limit + 1, 2)))
    t.equal(err.closeCode, 1009)
    t.match(err.message, /exceeds maxPayload \(100000 bytes\)/)
    server.close()
    client.close()
  })

  t.test('a 64 MiB decompression bomb against maxPayload 1 MiB', async (t) => {
    const bomb = await zeroBomb(64 * MiB)
    t.ok(bomb.length < 128 * 1024, `bomb is ${bomb.length} bytes`)
    // Watch the streams the instance creates: how much input they consume and output they emit.
    const inflaters: zlib.InflateRaw[] = []
    let emitted = 0
    const { PerMessageDeflate: Spied } = await t.mockImport<typeof import('../../lib/extensions/permessage-deflate/codec.js')>(
      '../../lib/extensions/permessage-deflate/codec.js', {
        'node:zlib': {
          ...zlib,
          createInflateRaw: (o: zlib.ZlibOptions) => {
            const s = zlib.createInflateRaw(o)
            s.on('data', (c: Buffer) => { emitted += c.length })
            inflaters.push(s)
            return s
          }
        }
      })
    const client = new Spied(neg.client, 'client', opts(), MiB)
    const before = process.memoryUsage().arrayBuffers
    let peak = before
    let sampling = true
    const sample = (): void => {
      peak = Math.max(peak, process.memoryUsage().arrayBuffers)
      if (sampling) setImmediate(sample)
    }
    sample()
    const err = await new Promise<InflateError>((resolve, reject) => {
      client.decompress(bomb, (err) => { if (err !== null) resolve(err); else reject(new Error('bomb inflated')) })
    })
    sampling = false
    peak = Math.max(peak, process.memoryUsage().arrayBuffers)
    t.equal(err.closeCode, 1009)
    t.equal(inflaters.length, 1)
    const consumed = inflaters[0]!.bytesWritten
    t.ok(consumed < bomb.length / 8, `stopped after ${consumed} of ${bomb.length} input bytes`)
    t.ok(emitted <= MiB + 64 * 1024, `${emitted} bytes inflated before stopping (limit ${MiB})`)
    t.ok(inflaters[0]!.destroyed, 'the inflate stream was released')
    t.ok(peak - before < 8 * MiB, `arrayBuffers grew by ${((peak - before) / MiB).toFixed(2)} MiB at most`)
    client.close()
  })

  t.test('Infinity means no limit', async (t) => {
    const client = new PerMessageDeflate(neg.client, 'client', opts(), Infinity)
    t.equal((await decompress(client, await zeroBomb(4 * MiB))).length, 4 * MiB)
    client.close()
  })
})

t.test('callbacks come in call order; concurrency 1 shared by many instances', async (t) => {
  // no takeover, so that every message can be checked on its own
  const o = opts({ concurrency: 1, serverNoContextTakeover: true })
  const neg = handshake(o, o)
  const limiter = getLimiter(1)
  t.equal(limiter, getLimiter(1), 'one limiter per concurrency value, process-wide')
  const instances = Array.from({ length: 40 }, () => new PerMessageDeflate(neg.server, 'server', o, MiB))
  const events: string[] = []
  let maxRunning = 0
  await new Promise<void>((resolve) => {
    let left = instances.length * 5
    instances.forEach((pmd, i) => {
      for (let j = 0; j < 5; j++) {
        // sizes vary so that a larger job submitted earlier would finish later if jobs ran in parallel
        const data = text(j % 2 === 0 ? 60000 : 100, i * 10 + j)
        pmd.compress(data, (err, out) => {
          maxRunning = Math.max(maxRunning, limiter.running)
          events.push(`${i}:${j}`)
          if (err !== null || out === null || !inflateAlone(out).equals(data)) {
            events.push('bad')
          }
          if (--left === 0) resolve()
        })
      }
    })
    t.equal(limiter.running, 1, 'one job runs')
    t.equal(limiter.pending, instances.length - 1, 'one job per instance waits; the rest wait in their instance')
  })
  t.ok(maxRunning <= 1)
  t.notOk(events.includes('bad'))
  for (let i = 0; i < instances.length; i++) {
    const mine = events.filter((e) => e.startsWith(`${i}:`))
    t.same(mine, [0, 1, 2, 3, 4].map((j) => `${i}:${j}`), `instance ${i} in order`)
  }
  t.same(events.slice(0, 3), ['0:0', '1:0', '2:0'], 'instances take turns in FIFO order')
  t.equal(limiter.running, 0)
  for (const pmd of instances) pmd.close()

  t.test('decompress order on one instance, with compress running alongside', async (t) => {
    const server = new PerMessageDeflate(neg.server, 'server', o, MiB)
    const client = new PerMessageDeflate(neg.client, 'client', o, MiB)
    const payloads = Array.from({ length: 20 }, (_, i) => text(i % 3 === 0 ? 50000 : 50, i))
    const compressed = await Promise.all(payloads.map((p) => compress(server, p)))
    const order: number[] = []
    const inflated = await Promise.all(compressed.map((c, i) => decompress(client, c).then((r) => { order.push(i); return r })))
    t.same(order, payloads.map((_, i) => i))
    t.ok(inflated.every((r, i) => r.equals(payloads[i]!)))
    server.close()
    client.close()
  })
})

t.test('close()', async (t) => {
  const o = opts({ concurrency: 1 })
  const neg = handshake(o, o)

  t.test('drops pending callbacks and frees the limiter slot', async (t) => {
    const limiter = getLimiter(1)
    const a = new PerMessageDeflate(neg.server, 'server', o, MiB)
    const b = new PerMessageDeflate(neg.server, 'server', o, MiB)
    let aCalls = 0
    a.compress(text(200000, 1), () => { aCalls++ }) // in flight
    a.compress(text(200000, 2), () => { aCalls++ }) // waiting in a's lane
    a.decompress(Buffer.from([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), () => { aCalls++ }) // waiting in the limiter
    const bDone = compress(b, text(5000, 3)) // waiting in the limiter behind a
    t.equal(limiter.running, 1)
    t.equal(limiter.pending, 2)
    a.close()
    a.close() // idempotent
    const out = await bDone
    t.ok(out.length > 0, 'the next instance got the slot')
    await new Promise((resolve) => setTimeout(resolve, 20))
    t.equal(aCalls, 0, 'no callback of the closed instance was called')
    t.equal(limiter.running, 0)
    t.equal(limiter.pending, 0)
    a.compress(Buffer.from('x'), () => { aCalls++ })
    a.decompress(Buffer.from([0x00]), () => { aCalls++ })
    await new Promise((resolve) => setTimeout(resolve, 20))
    t.equal(aCalls, 0, 'calls after close are dropped')
    t.equal(limiter.running, 0)
    b.close()
  })

  t.test('while inflating', async (t) => {
    const a = new PerMessageDeflate(neg.client, 'client', o, 64 * MiB)
    let called = false
    a.decompress(await zeroBomb(32 * MiB), () => { called = true })
    setImmediate(() => a.close())
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.equal(called, false)
    t.equal(getLimiter(1).running, 0)
  })

  t.test('close before anything was used', async (t) => {
    const a = new PerMessageDeflate(neg.server, 'server', o, MiB)
    a.close()
    t.pass()
  })
})

t.test('callbacks are never synchronous', async (t) => {
  const neg = handshake(opts(), opts())
  const server = new PerMessageDeflate(neg.server, 'server', opts(), MiB)
  const client = new PerMessageDeflate(neg.client, 'client', opts(), MiB)
  const order: string[] = []
  const done = new Promise<void>((resolve) => {
    const push = (what: string) => () => { if (order.push(what) === 4) resolve() }
    server.compress(Buffer.from('x'), push('compress'))
    client.decompress(Buffer.alloc(0), push('empty'))
    client.decompress(Buffer.from([0xff]), push('corrupt'))
  })
  order.push('sync')
  await done
  t.equal(order[0], 'sync')
  t.same(order.slice(1).sort(), ['compress', 'corrupt', 'empty'])

  const closing = new PerMessageDeflate(neg.client, 'client', opts(), MiB)
  let called = false
  closing.decompress(Buffer.alloc(0), () => { called = true })
  closing.close()
  await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(called, false, 'an empty payload pending at close() is dropped too')
  server.close()
  client.close()
})

t.test('exposed properties', async (t) => {
  const neg = handshake(opts(), opts({ threshold: 77 }))
  const pmd = new PerMessageDeflate(neg.server, 'server', opts({ threshold: 77 }), MiB)
  t.equal(pmd.threshold, 77)
  t.equal(pmd.role, 'server')
  t.same(pmd.params, neg.server)
  pmd.close()
})

t.test('interoperates with the ws implementation', async (t) => {
  interface WsPmd {
    offer: () => Record<string, unknown>
    accept: (configurations: unknown[]) => Record<string, unknown>
    compress: (data: Buffer, fin: boolean, cb: (err: Error | null, out?: Buffer) => void) => void
    decompress: (data: Buffer, fin: boolean, cb: (err: Error | null, out?: Buffer) => void) => void
    cleanup: () => void
  }
  const require = createRequire(import.meta.url)
  // ws does not export its internals: load them by file path (test-only, ws is a devDependency)
  const wsDir = dirname(require.resolve('ws'))
  const WsPerMessageDeflate = require(join(wsDir, 'lib/permessage-deflate.js')) as new (o: Record<string, unknown>) => WsPmd
  const wsExt = require(join(wsDir, 'lib/extension.js')) as {
    parse: (h: string) => Record<string, unknown[]>, format: (e: Record<string, unknown>) => string
  }
  const wsCall = (fn: (cb: (err: Error | null, out?: Buffer) => void) => void): Promise<Buffer> =>
    new Promise((resolve, reject) => fn((err, out) => { if (err !== null) reject(err); else resolve(out as Buffer) }))

  for (const cfg of [{}, { serverMaxWindowBits: 10, clientMaxWindowBits: 11, serverNoContextTakeover: true }, { clientNoContextTakeover: true }]) {
    // ws client -> our server
    const wsClient = new WsPerMessageDeflate({ ...cfg, isServer: false, maxPayload: 0, threshold: 0 })
    const offerHeader = wsExt.format({ 'permessage-deflate': [wsClient.offer()] })
    const accepted = negotiateServer(offers(offerHeader), opts(cfg))
    t.ok(accepted, `${JSON.stringify(cfg)}: ${offerHeader} -> ${accepted?.response}`)
    wsClient.accept(wsExt.parse(accepted!.response)['permessage-deflate']!)
    const server = new PerMessageDeflate(accepted!.params, 'server', opts(cfg), MiB)

    // our client -> ws server
    const wsServer = new WsPerMessageDeflate({ ...cfg, isServer: true, maxPayload: MiB, threshold: 0 })
    const wsAccepted = wsServer.accept(wsExt.parse(clientOffer(opts(cfg)))['permessage-deflate']!)
    const responseHeader = wsExt.format({ 'permessage-deflate': wsAccepted })
    const clientParams = acceptClientResponse(offers(responseHeader), opts(cfg))
    t.ok(clientParams, `ws server answered ${responseHeader}`)
    const client = new PerMessageDeflate(clientParams!, 'client', opts(cfg), MiB)

    let ok = 0
    for (let i = 0; i < 12; i++) {
      const data = text([10, 1000, 40000, 200000][i % 4]!, i)
      const fromServer = await compress(server, data)
      const r1 = await wsCall((cb) => wsClient.decompress(fromServer, true, cb))
      const fromWsClient = await wsCall((cb) => wsClient.compress(data, true, cb))
      const r2 = await decompress(server, fromWsClient)
      const fromClient = await compress(client, data)
      const r3 = await wsCall((cb) => wsServer.decompress(fromClient, true, cb))
      const fromWsServer = await wsCall((cb) => wsServer.compress(data, true, cb))
      const r4 = await decompress(client, fromWsServer)
      if (r1.equals(data) && r2.equals(data) && r3.equals(data) && r4.equals(data)) ok++
    }
    t.equal(ok, 12, 'all messages round-trip both ways with ws on the other end')
    wsClient.cleanup()
    wsServer.cleanup()
    server.close()
    client.close()
  }
})

t.test('Limiter', async (t) => {
  t.throws(() => new Limiter(0), RangeError)
  t.throws(() => new Limiter(1.5), RangeError)

  t.test('FIFO with bounded concurrency', async (t) => {
    const l = new Limiter(2)
    const started: number[] = []
    const dones: Array<() => void> = []
    for (let i = 0; i < 5; i++) l.add((done) => { started.push(i); dones.push(done) })
    t.same(started, [0, 1])
    t.equal(l.running, 2)
    t.equal(l.pending, 3)
    dones[1]!()
    dones[1]!() // a second call is ignored
    t.same(started, [0, 1, 2])
    t.equal(l.running, 2)
    dones[0]!()
    dones[2]!()
    t.same(started, [0, 1, 2, 3, 4])
    dones[3]!()
    dones[4]!()
    t.equal(l.running, 0)
    t.equal(l.pending, 0)
  })

  t.test('many jobs finishing synchronously do not grow the stack', async (t) => {
    const l = new Limiter(1)
    let hold: (() => void) | null = null
    l.add((done) => { hold = done })
    let count = 0
    for (let i = 0; i < 100000; i++) l.add((done) => { count++; done() })
    t.equal(l.pending, 100000)
    ;(hold as unknown as () => void)()
    t.equal(count, 100000)
    t.equal(l.running, 0)
    t.equal(l.pending, 0)
  })

  t.test('a throwing job frees its slot and does not stall the queue', async (t) => {
    const l = new Limiter(1)
    let hold: (() => void) | null = null
    l.add((done) => { hold = done })
    const ran: string[] = []
    l.add(() => { ran.push('a'); throw new Error('boom') })
    l.add(() => { ran.push('b'); throw new Error('second') })
    l.add((done) => { ran.push('c'); done() })
    t.throws(() => (hold as unknown as () => void)(), { message: 'boom' }, 'the first error reaches the caller')
    t.same(ran, ['a', 'b', 'c'])
    t.equal(l.running, 0)
    t.throws(() => l.add(() => { throw new Error('direct') }), { message: 'direct' })
    t.equal(l.running, 0)
  })
})
