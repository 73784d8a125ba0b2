/** XOR masking (RFC 6455 §5.3) against a byte-by-byte reference, at every length and alignment. */
import t from 'tap'
import { applyMask, copyMasked } from '../../lib/protocol/mask.js'

function reference (data: Buffer, key: Buffer): Buffer {
  const out = Buffer.from(data)
  for (let i = 0; i < out.length; i++) out[i] ^= key[i % 4]!
  return out
}

function bytes (n: number, seed: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed * 17 + 7) & 0xff
  return b
}

t.test('applyMask matches the reference at every length 0-200 and every alignment', async (t) => {
  const key = Buffer.from([0x01, 0x80, 0xfe, 0x5a])
  let wrong = 0
  let runs = 0
  for (let len = 0; len <= 200; len++) {
    for (let start = 0; start < 8; start++) {
      const data = bytes(len, start)
      // Place the range at `start` inside a bigger buffer that itself starts at an odd offset of its ArrayBuffer.
      const arena = Buffer.alloc(len + 16)
      const buf = arena.subarray(3)
      data.copy(buf, start)
      const before = Buffer.from(buf)
      applyMask(buf, key, start, start + len)
      runs++
      if (!buf.subarray(start, start + len).equals(reference(data, key))) wrong++
      if (!buf.subarray(0, start).equals(before.subarray(0, start)) || !buf.subarray(start + len).equals(before.subarray(start + len))) wrong++
    }
  }
  t.equal(wrong, 0, `${runs} masks agree with the reference and touch nothing outside the range`)
})

t.test('masking twice restores the data; a large payload', async (t) => {
  const key = Buffer.from([0xde, 0xad, 0xbe, 0xef])
  const data = bytes(1 << 20, 5)
  const buf = Buffer.from(data)
  applyMask(buf, key, 0, buf.length)
  t.ok(buf.equals(reference(data, key)), '1 MiB masked')
  applyMask(buf, key, 0, buf.length)
  t.ok(buf.equals(data), 'unmasked again')
})

t.test('a mask that is a view into a pool', async (t) => {
  const pool = Buffer.from([9, 9, 1, 2, 3, 4, 9])
  const key = pool.subarray(2, 6)
  const data = bytes(77, 1)
  const buf = Buffer.from(data)
  applyMask(buf, key, 0, buf.length)
  t.ok(buf.equals(reference(data, Buffer.from([1, 2, 3, 4]))))
})

t.test('copyMasked leaves the source untouched', async (t) => {
  const key = Buffer.from([1, 2, 3, 4])
  for (const len of [0, 5, 64, 1000]) {
    const src = bytes(len, 2)
    const copy = Buffer.from(src)
    const dst = Buffer.alloc(len + 6)
    copyMasked(src, dst, 6, key)
    t.ok(src.equals(copy), `source of ${len} bytes unchanged`)
    t.ok(dst.subarray(6).equals(reference(src, key)), `destination of ${len} bytes masked`)
  }
})
