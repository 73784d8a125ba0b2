// The shared header grammar (lib/http/tokens.ts): the RFC 7230 tchar/token check and the one scanner of
// comma-separated lists used by hasToken (Connection, Upgrade) and parseProtocols (Sec-WebSocket-Protocol).
import t from 'tap'
import { isTchar, isToken, listCursor, nextElement, elementText, listIncludes } from '../../lib/http/tokens.js'

/** All elements the scanner reports, as strings. */
function elements (value: string): string[] {
  const out: string[] = []
  const cursor = listCursor(value)
  while (nextElement(cursor)) out.push(elementText(cursor))
  return out
}

/** What splitting on commas and trimming with String.prototype.trim gives (the scanner must agree). */
function splitTrim (value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '')
}

t.test('isTchar: exactly the RFC 7230 tchar set, over every UTF-16 code unit', async (t) => {
  const tchar = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]$/
  const wrong: number[] = []
  for (let c = 0; c <= 0xffff; c++) {
    if (isTchar(c) !== tchar.test(String.fromCharCode(c))) wrong.push(c)
  }
  t.same(wrong, [], 'no code unit disagrees with the grammar')
  t.equal(isTchar(0x10000), false, 'beyond the BMP')
  t.equal(isTchar(-1), false)
})

t.test('isToken', async (t) => {
  t.equal(isToken('v1.chat'), true)
  t.equal(isToken("!#$%&'*+-.^_`|~09AZaz"), true)
  t.equal(isToken('abc'), true)
  t.equal(isToken(''), false, 'a token has at least one tchar')
  t.equal(isToken('a,b'), false)
  t.equal(isToken('a b'), false)
  t.equal(isToken('"a"'), false)
  t.equal(isToken('a;b=c'), false)
  t.equal(isToken('ä'), false, 'non-ASCII')
  t.equal(isToken('a\u0000'), false, 'control character')
})

t.test('list scanner: trimmed, non-empty elements in order', async (t) => {
  t.same(elements(''), [])
  t.same(elements('a'), ['a'])
  t.same(elements('a,b'), ['a', 'b'])
  t.same(elements('  a ,\tb\t, c  '), ['a', 'b', 'c'], 'optional whitespace around elements')
  t.same(elements('a,,b'), ['a', 'b'], 'empty elements are skipped (RFC 7230 §7)')
  t.same(elements(',a,'), ['a'], 'leading and trailing commas')
  t.same(elements(', , ,\t,'), [], 'only empty elements')
  t.same(elements('a b, c'), ['a b', 'c'], 'inner whitespace stays: the caller decides whether it is valid')
  t.same(elements('keep-alive, Upgrade'), ['keep-alive', 'Upgrade'])
})

t.test('list scanner: the cursor reports bounds and stays at the end', async (t) => {
  const cursor = listCursor(' ab , c')
  t.equal(nextElement(cursor), true)
  t.same([cursor.start, cursor.end, cursor.pos], [1, 3, 5], 'bounds of "ab", resume after its comma')
  t.equal(nextElement(cursor), true)
  t.same([cursor.start, cursor.end], [6, 7], 'the last element, without a comma after it')
  t.equal(nextElement(cursor), false)
  t.equal(nextElement(cursor), false, 'asking again at the end is harmless')
})

t.test('list scanner: trims exactly what String.prototype.trim trims', async (t) => {
  // The header code used to split on commas and call trim(); the scanner must accept the same values.
  const wrong: number[] = []
  for (let c = 0; c <= 0xffff; c++) {
    if (c === 0x2c) continue // the separator itself
    const ch = String.fromCharCode(c)
    const value = `${ch}a${ch},${ch}`
    if (JSON.stringify(elements(value)) !== JSON.stringify(splitTrim(value))) wrong.push(c)
  }
  t.same(wrong, [], 'every code unit is trimmed, or kept, as trim() does')
})

t.test('list scanner: agrees with split-and-trim on random lists', async (t) => {
  // Seeded LCG over an alphabet dense in separators and whitespace, so empty and padded elements are common.
  let seed = 0x7230
  const rnd = (): number => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296
  const alphabet = [',', ',', ' ', '\t', '\u00a0', '\ufeff', '\n', 'a', 'b', 'Z', '-', '"', ';', 'é']
  for (let round = 0; round < 2000; round++) {
    const length = Math.floor(rnd() * 24)
    let value = ''
    for (let i = 0; i < length; i++) value += alphabet[Math.floor(rnd() * alphabet.length)]
    const got = elements(value)
    const want = splitTrim(value)
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      t.same(got, want, `value ${JSON.stringify(value)}`)
      return
    }
  }
  t.pass('2000 random lists scanned as split-and-trim would')
})

t.test('list scanner: a large hostile value is scanned to the end', async (t) => {
  t.same(elements(','.repeat(1 << 20)), [], '1 MiB of commas')
  t.same(elements(' '.repeat(1 << 20) + 'x'), ['x'], '1 MiB of whitespace, then an element')
  const many = Array.from({ length: 10_000 }, (_, i) => `e${i}`)
  t.same(elements(many.join(' , ')), many)
})

t.test('listIncludes: whole elements, exact match', async (t) => {
  t.equal(listIncludes('upgrade', 'upgrade'), true, 'the value alone')
  t.equal(listIncludes('keep-alive, upgrade', 'upgrade'), true)
  t.equal(listIncludes('keep-alive,upgrade ', 'upgrade'), true)
  t.equal(listIncludes(' upgrade\t', 'upgrade'), true)
  t.equal(listIncludes('upgrade, keep-alive', 'upgrade'), true)
  t.equal(listIncludes('upgrades', 'upgrade'), false, 'a longer element')
  t.equal(listIncludes('upgrad', 'upgrade'), false, 'a shorter element')
  t.equal(listIncludes('upgradx, keep-alive', 'upgrade'), false, 'same length, different text')
  t.equal(listIncludes('Upgrade', 'upgrade'), false, 'case matters: callers fold case first')
  t.equal(listIncludes('up grade', 'upgrade'), false)
  t.equal(listIncludes('', 'upgrade'), false)
  t.equal(listIncludes('a,,b', ''), false, 'the empty string is never an element')
  t.equal(listIncludes('', ''), false)
})
