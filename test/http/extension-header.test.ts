import t from 'tap'
import {
  parseExtensions, formatExtension, type ExtensionOffer,
  MAX_EXTENSIONS_HEADER_LENGTH, MAX_EXTENSION_OFFERS, MAX_EXTENSION_PARAMS
} from '../../lib/http/extension-header.js'

/** Offers as plain data, for t.same. */
function plain (offers: ExtensionOffer[] | null): unknown {
  if (offers === null) return null
  return offers.map((o) => ({
    name: o.name,
    params: Object.fromEntries(o.params),
    ...(o.duplicateParams === true ? { duplicateParams: true } : {})
  }))
}

t.test('absent and empty headers', async (t) => {
  t.same(parseExtensions(undefined), [])
  t.same(parseExtensions(''), [])
  t.same(parseExtensions('   '), [])
  t.same(parseExtensions(', ,\t,'), [], 'only empty list elements (RFC 7230 §7)')
  t.same(parseExtensions([]), [])
})

t.test('single extension, with and without parameters', async (t) => {
  t.same(plain(parseExtensions('permessage-deflate')), [{ name: 'permessage-deflate', params: {} }])
  t.same(plain(parseExtensions('permessage-deflate; client_max_window_bits')),
    [{ name: 'permessage-deflate', params: { client_max_window_bits: true } }])
  t.same(plain(parseExtensions('permessage-deflate;server_max_window_bits=10;client_no_context_takeover')),
    [{ name: 'permessage-deflate', params: { server_max_window_bits: '10', client_no_context_takeover: true } }])
  const [offer] = parseExtensions('x; b=1; a=2; c') as ExtensionOffer[]
  t.same([...offer!.params.keys()], ['b', 'a', 'c'], 'parameters keep header order')
})

t.test('several offers, in order', async (t) => {
  const h = 'permessage-deflate; client_max_window_bits=10, permessage-deflate, x-webkit-deflate-frame'
  t.same(plain(parseExtensions(h)), [
    { name: 'permessage-deflate', params: { client_max_window_bits: '10' } },
    { name: 'permessage-deflate', params: {} },
    { name: 'x-webkit-deflate-frame', params: {} }
  ])
})

t.test('optional whitespace everywhere it may appear', async (t) => {
  const h = ' \tpermessage-deflate \t; \tserver_max_window_bits \t= \t10 \t;client_no_context_takeover\t ,  foo ;bar= "baz" \t'
  t.same(plain(parseExtensions(h)), [
    { name: 'permessage-deflate', params: { server_max_window_bits: '10', client_no_context_takeover: true } },
    { name: 'foo', params: { bar: 'baz' } }
  ])
})

t.test('empty list elements are ignored', async (t) => {
  t.same(plain(parseExtensions(',a, ,b,,\t,c,')), [
    { name: 'a', params: {} }, { name: 'b', params: {} }, { name: 'c', params: {} }
  ])
})

t.test('quoted values are unescaped and must be tokens', async (t) => {
  t.same(plain(parseExtensions('a; b="10"')), [{ name: 'a', params: { b: '10' } }])
  t.same(plain(parseExtensions('a; b="\\1\\0"')), [{ name: 'a', params: { b: '10' } }], 'quoted-pair')
  t.same(plain(parseExtensions('a; b="x"; c=y')), [{ name: 'a', params: { b: 'x', c: 'y' } }])
  t.equal(parseExtensions('a; b=""'), null, 'empty quoted value is not a token')
  t.equal(parseExtensions('a; b="x y"'), null, 'space inside quotes: not a token once unquoted')
  t.equal(parseExtensions('a; b="x\\"y"'), null, 'escaped quote: not a token once unquoted')
  t.equal(parseExtensions('a; b="x,y"'), null)
  t.equal(parseExtensions('a; b="\u00e9"'), null, 'obs-text is a valid qdtext but not a tchar')
  t.equal(parseExtensions('a; b="\\\u00e9"'), null, 'escaped obs-text likewise')
  t.equal(parseExtensions('a; b="x\u0001"'), null, 'control character in quoted-string')
  t.equal(parseExtensions('a; b="x\\\u0001"'), null, 'control character in quoted-pair')
  t.equal(parseExtensions('a; b="\u0100"'), null, 'non-Latin-1 character in quoted-string')
})

t.test('unterminated quotes', async (t) => {
  t.equal(parseExtensions('a; b="10'), null)
  t.equal(parseExtensions('a; b="10\\'), null, 'ends inside a quoted-pair')
  t.equal(parseExtensions('a; b="10\\"'), null, 'the only quote is escaped')
  t.equal(parseExtensions('a; b="'), null)
})

t.test('repeated header lines are one list', async (t) => {
  t.same(plain(parseExtensions(['permessage-deflate; client_max_window_bits', 'foo, bar; baz=1'])), [
    { name: 'permessage-deflate', params: { client_max_window_bits: true } },
    { name: 'foo', params: {} },
    { name: 'bar', params: { baz: '1' } }
  ])
  t.same(plain(parseExtensions(['', 'a'])), [{ name: 'a', params: {} }])
  t.equal(parseExtensions(['a; b="x', 'y"']), null, 'a quoted-string cannot span header lines')
  t.equal(parseExtensions(['a', 7 as unknown as string]), null, 'non-string element')
  t.equal(parseExtensions(42 as unknown as string), null, 'neither string nor array')
})

t.test('duplicate parameters are reported, not a syntax error', async (t) => {
  const offers = parseExtensions('permessage-deflate; server_max_window_bits=10; server_max_window_bits=12, permessage-deflate')
  t.same(plain(offers), [
    { name: 'permessage-deflate', params: { server_max_window_bits: '10' }, duplicateParams: true },
    { name: 'permessage-deflate', params: {} }
  ], 'first value kept, flag set only on that element')
  t.equal(offers![1]!.duplicateParams, undefined)
})

t.test('malformed headers', async (t) => {
  const bad = [
    ';', 'a;', 'a; ', 'a;;b', 'a; =1', 'a; b=', 'a; b= ', 'a; b=,', 'a; b==1', 'a b', 'a; b c', 'a; b=1 2',
    'a; b="1"2', 'a; b="1" c', 'a,b c', '"a"', 'a/b', 'a; b/c', 'a; b=c/d', 'a@b', '=a', 'a=1', 'é', 'a; é',
    'a; b=é', 'a\r\n', 'a\u0000', 'a;b=1;', ', ;', 'a , ; b'
  ]
  for (const h of bad) t.equal(parseExtensions(h), null, JSON.stringify(h))
})

t.test('every tchar is accepted in names and values; separators are not', async (t) => {
  const tchars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
  t.same(plain(parseExtensions(`${tchars}; ${tchars}=${tchars}`)),
    [{ name: tchars, params: { [tchars]: tchars } }])
  for (const sep of '()<>@:\\/[]?{}') {
    t.equal(parseExtensions(`a${sep}b`), null, `separator ${sep} in a name`)
  }
})

t.test('size limits', async (t) => {
  const exact = 'a'.repeat(MAX_EXTENSIONS_HEADER_LENGTH)
  t.same(plain(parseExtensions(exact)), [{ name: exact, params: {} }], 'exactly at the length limit')
  t.equal(parseExtensions(exact + 'a'), null, 'one character over')
  t.equal(parseExtensions(['a'.repeat(5000), 'b'.repeat(5000)]), null, 'limit applies to repeated lines together')
  t.equal(parseExtensions(Array.from({ length: 100000 }, () => 'a')), null, 'a huge array is refused early')

  const offers = (n: number): string => Array.from({ length: n }, (_, i) => `e${i}`).join(', ')
  t.equal(parseExtensions(offers(MAX_EXTENSION_OFFERS))!.length, MAX_EXTENSION_OFFERS)
  t.equal(parseExtensions(offers(MAX_EXTENSION_OFFERS + 1)), null)
  t.same(parseExtensions(','.repeat(4000)), [], 'empty elements do not count as offers')

  const params = (n: number): string => 'x' + Array.from({ length: n }, (_, i) => `; p${i}`).join('')
  t.equal(parseExtensions(params(MAX_EXTENSION_PARAMS))![0]!.params.size, MAX_EXTENSION_PARAMS)
  t.equal(parseExtensions(params(MAX_EXTENSION_PARAMS + 1)), null)
  const spread = Array.from({ length: 60 }, () => 'x; a; b; c').join(',')
  t.equal(parseExtensions(spread), null, 'the parameter limit counts over all offers')
})

t.test('hostile headers are answered in one bounded pass', async (t) => {
  const hostile = [
    'a'.repeat(64 * 1024),
    'a; ' + 'b; '.repeat(20000),
    'a; b="' + '\\a'.repeat(30000),
    'a; b="' + 'x'.repeat(64 * 1024),
    ' '.repeat(64 * 1024) + 'a',
    ','.repeat(8 * 1024),
    'a;b=1,'.repeat(1300),
    'a; b="' + '\\a'.repeat(4000) + '"',
    Array.from({ length: 5000 }, () => 'permessage-deflate; client_max_window_bits').join(', ')
  ]
  for (const h of hostile) {
    const r = parseExtensions(h)
    t.ok(r === null || Array.isArray(r), `${h.length} chars`)
  }
  t.same(plain(parseExtensions(','.repeat(8 * 1024))), [])
})

t.test('formatExtension', async (t) => {
  t.equal(formatExtension('permessage-deflate', new Map()), 'permessage-deflate')
  t.equal(formatExtension('permessage-deflate', new Map<string, string | true>([
    ['server_no_context_takeover', true], ['client_max_window_bits', '10']
  ])), 'permessage-deflate; server_no_context_takeover; client_max_window_bits=10')
  t.throws(() => formatExtension('bad name', new Map()), TypeError)
  t.throws(() => formatExtension('', new Map()), TypeError)
  t.throws(() => formatExtension('a', new Map([['b c', true]])), TypeError)
  t.throws(() => formatExtension('a', new Map([['b', 'x y']])), TypeError)
  t.throws(() => formatExtension('a', new Map([['b', '']])), TypeError)
  t.throws(() => formatExtension('a', new Map([['b', 1 as unknown as string]])), TypeError)
})

t.test('format then parse round-trips', async (t) => {
  const params = new Map<string, string | true>([['a', true], ['b', '15'], ['c', "x!#$%&'*+-.^_`|~"]])
  const parsed = parseExtensions(formatExtension('ext', params) + ', ' + formatExtension('other', new Map()))
  t.same(plain(parsed), [{ name: 'ext', params: Object.fromEntries(params) }, { name: 'other', params: {} }])
})
