// Origin bypass attempts against an allowlist of https://trusted.com (and a wildcard, and the same-origin
// default): each is refused with 403 over real TCP, while the spellings RFC 6454 calls the same origin are accepted.
import t, { type Test } from 'tap'
import type { FastifyRequest } from 'fastify'
import { compileOrigins, isSameOrigin } from '../../lib/http/origin.js'
import { buildApp, listen, rawHttp, handshake } from '../helpers/index.js'

/** Read whatever the server answers, even if it resets the connection. */
const ANSWER = { ms: 3000, tolerateReset: true }

const fakeRequest = {} as FastifyRequest

/** Bypass attempts against https://trusted.com that reach the plugin (Node accepts the header value). */
const REFUSED = [
  'null',
  'trusted.com', // missing scheme
  '//trusted.com',
  'https:trusted.com',
  'https:/trusted.com',
  'https://trusted.com@evil.com', // userinfo
  'https://evil.com@trusted.com',
  'https://trusted.com:443@evil.com',
  'https://user:pass@trusted.com',
  'https://trusted.com.evil.com', // suffix
  'https://eviltrusted.com', // prefix
  'https://evil-trusted.com',
  'https://sub.trusted.com', // subdomain of an exact entry
  'https://trusted.com.', // trailing dot
  'https://trusted.com..',
  'https://.trusted.com',
  'http://trusted.com', // other scheme
  'wss://trusted.com',
  'ws://trusted.com',
  'ftp://trusted.com',
  'https://trusted.com:8443', // other port
  'https://trusted.com:80',
  'https://trusted.com:',
  'https://trusted.com:443443',
  'https://trusted.com:99999',
  'https://trusted.com:-443',
  'https://trusted.com/', // path, query, fragment
  'https://trusted.com/path',
  'https://trusted.com?q=1',
  'https://trusted.com#frag',
  'https://trusted.com/@evil.com',
  'https://trusted.com\\@evil.com',
  'https://trusted.com%2eevil.com',
  'https://trusted%2ecom',
  'https://trusted .com', // inner whitespace
  'https:// trusted.com',
  'https://trusted.com ,https://evil.com',
  'https://trusted.com, https://evil.com', // two origins in one header
  'https://evil.com, https://trusted.com',
  'https://trusted.com https://trusted.com',
  'https://[::1]',
  'https://trusted。com',
  'https://xn--trusted-9ya.com',
  '*',
  ''
]

/** Only reachable through the function (Node's HTTP parser strips or refuses these in a header). */
const REFUSED_UNPARSEABLE_BY_NODE = [
  ' https://trusted.com',
  'https://trusted.com ',
  'https://trusted.com\t',
  'https://trusted.com\n',
  'https://trusted.com\r\nX: y',
  'https://trusted.com\u0000',
  'https://trusted.com\u0000.evil.com',
  '\u0000https://trusted.com',
  'https://trusted.com\u000b',
  'https://trusted.com\u007f',
  'https://trüsted.com',
  'https://truѕted.com' // Cyrillic s
]

/** RFC 6454: the same origin as https://trusted.com. */
const ACCEPTED = ['https://trusted.com', 'https://TRUSTED.com', 'https://Trusted.Com', 'HTTPS://trusted.com', 'https://trusted.com:443']

t.test('compileOrigins: bypass attempts are refused, RFC 6454 equivalents accepted', async (t) => {
  const check = compileOrigins(['https://trusted.com'])
  for (const origin of [...REFUSED, ...REFUSED_UNPARSEABLE_BY_NODE]) {
    t.equal(check(origin, fakeRequest), false, `refused: ${JSON.stringify(origin)}`)
  }
  for (const origin of ACCEPTED) t.equal(check(origin, fakeRequest), true, `accepted: ${origin}`)
  t.equal(check('https://trusted.com', fakeRequest), true, 'still accepted after refusals (no state)')
})

t.test('compileOrigins: a wildcard matches subdomains at a label boundary only', async (t) => {
  const check = compileOrigins(['https://*.trusted.com'])
  for (const origin of ['https://a.trusted.com', 'https://a.b.trusted.com', 'https://A.TRUSTED.COM:443']) {
    t.equal(check(origin, fakeRequest), true, `accepted: ${origin}`)
  }
  for (const origin of ['https://trusted.com', 'https://eviltrusted.com', 'https://a.trusted.com.evil.com', 'https://.trusted.com',
    'https://a..trusted.com', 'https://a.trusted.com.', 'http://a.trusted.com', 'https://a.trusted.com:8443', 'https://evil.com#.trusted.com',
    'https://evil.com?.trusted.com', 'https://evil.com/.trusted.com', 'https://a.trusted.com@evil.com', 'https://evil.com\u0000.trusted.com', 'null']) {
    t.equal(check(origin, fakeRequest), false, `refused: ${JSON.stringify(origin)}`)
  }
})

t.test('compileOrigins: a very long origin is refused without work proportional to a backtracking regex', async (t) => {
  const check = compileOrigins(['https://trusted.com', 'https://*.trusted.com'])
  t.equal(check('https://' + 'a.'.repeat(50_000) + 'trusted.com', fakeRequest), false, 'over 2048 characters: refused')
  t.equal(check('https://' + 'a'.repeat(2030), fakeRequest), false)
  t.equal(check('https://' + '-'.repeat(1000) + '@trusted.com', fakeRequest), false)
})

async function allowlistServer (t: Test, options: Record<string, unknown>): Promise<number> {
  const { app } = await buildApp(options)
  app.get('/ws', { websocket: true }, (socket) => { socket.close(1000) })
  t.teardown(() => app.close())
  return listen(app)
}

async function status (port: number, headers: Record<string, string | string[] | null>): Promise<number> {
  const res = await rawHttp(port, handshake('/ws', port, headers), ANSWER)
  return res.status
}

t.test('over TCP against origins: [\'https://trusted.com\']: bypass attempts get 403, equivalents 101', async (t) => {
  const port = await allowlistServer(t, { origins: ['https://trusted.com'] })
  for (const origin of REFUSED) {
    if (origin === '') continue
    t.equal(await status(port, { Origin: origin }), 403, `403: ${JSON.stringify(origin)}`)
  }
  for (const origin of ACCEPTED) t.equal(await status(port, { Origin: origin }), 101, `101: ${origin}`)
  // Node trims optional whitespace around a header value: " https://trusted.com\t" arrives as the real origin.
  t.equal(await status(port, { Origin: ' \thttps://trusted.com \t' }), 101, 'surrounding whitespace is not part of the value')
  t.equal(await status(port, { Origin: '' }), 403, 'an empty Origin header')
  t.equal(await status(port, { Origin: ['https://trusted.com', 'https://evil.com'] }), 403, 'two Origin header lines')
  t.equal(await status(port, { Origin: ['https://evil.com', 'https://trusted.com'] }), 403, 'two Origin header lines, trusted last')
  t.equal(await status(port, { Origin: ['https://trusted.com', 'https://trusted.com'] }), 403, 'two identical Origin header lines')
  t.equal(await status(port, { Origin: 'https://evil.com', 'Sec-WebSocket-Origin': 'https://trusted.com' }), 403,
    'the obsolete Sec-WebSocket-Origin is not consulted')
  t.equal(await status(port, { Origin: 'https://evil.com', 'X-Forwarded-Host': 'trusted.com', Referer: 'https://trusted.com/' }), 403,
    'forwarded host and referer are not consulted')
  t.equal(await status(port, { Origin: 'https://evil.com', Host: 'trusted.com' }), 403, 'Host: trusted.com does not help an allowlist')
})

t.test('control characters in the Origin header are refused by Node (400) or by the allowlist (403)', async (t) => {
  const port = await allowlistServer(t, { origins: ['https://trusted.com'] })
  for (const raw of ['https://trusted.com\u0000', 'https://trusted.com\u0001.evil.com', 'https://trusted.com\u007f', '\u0000https://trusted.com',
    'https://trusted.com\u000b', 'https://trüsted.com']) {
    const request = Buffer.from(handshake('/ws', port, { Origin: raw }), 'latin1')
    const res = await rawHttp(port, request, ANSWER)
    t.ok(res.status === 400 || res.status === 403, `${JSON.stringify(raw)}: ${res.status || 'closed'} (never 101)`)
  }
  t.equal(await status(port, { Origin: 'https://trusted.com' }), 101, 'the server still accepts the trusted origin')
})

t.test('requireOrigin: a handshake without Origin (or with only Sec-WebSocket-Origin) is refused', async (t) => {
  const port = await allowlistServer(t, { origins: ['https://trusted.com'], requireOrigin: true })
  t.equal(await status(port, {}), 403)
  t.equal(await status(port, { 'Sec-WebSocket-Origin': 'https://trusted.com' }), 403)
  t.equal(await status(port, { Origin: 'https://trusted.com' }), 101)
})

t.test('over TCP against origins: [\'https://*.trusted.com\']', async (t) => {
  const port = await allowlistServer(t, { origins: ['https://*.trusted.com'] })
  t.equal(await status(port, { Origin: 'https://app.trusted.com' }), 101)
  for (const origin of ['https://trusted.com', 'https://apptrusted.com', 'https://app.trusted.com.evil.com', 'https://app.trusted.com@evil.com',
    'https://evil.com/.trusted.com', 'https://app.trusted.com.', 'null']) {
    t.equal(await status(port, { Origin: origin }), 403, `403: ${origin}`)
  }
})

t.test('the same-origin default: the Origin must match the Host header and the Host the connection\'s port', async (t) => {
  const port = await allowlistServer(t, {})
  const host = `127.0.0.1:${port}`
  t.equal(await status(port, { Origin: `http://${host}`, Host: host }), 101, 'same origin: 101')
  t.equal(await status(port, { Origin: `http://127.0.0.1:${port}`, Host: `127.0.0.1:${port}` }), 101)
  t.equal(await status(port, {}), 101, 'no Origin (a non-browser client): allowed without requireOrigin')
  const refused: Array<[string, Record<string, string>]> = [
    ['Host names another port, Origin agrees with Host', { Origin: 'http://127.0.0.1:1234', Host: '127.0.0.1:1234' }],
    ['Host without a port (80), Origin agrees', { Origin: 'http://127.0.0.1', Host: '127.0.0.1' }],
    ['an attacker host name on both (DNS rebinding shape, wrong port)', { Origin: 'http://evil.com', Host: 'evil.com' }],
    ['Origin on another port', { Origin: 'http://127.0.0.1:1234', Host: host }],
    ['Origin on another host', { Origin: `http://localhost:${port}`, Host: host }],
    ['Origin with userinfo', { Origin: `http://evil.com@127.0.0.1:${port}`, Host: host }],
    ['Origin with a path', { Origin: `http://${host}/`, Host: host }],
    ['null', { Origin: 'null', Host: host }],
    ['Host with userinfo', { Origin: 'http://evil.com', Host: `evil.com@127.0.0.1:${port}` }],
    ['Host with a path', { Origin: `http://${host}`, Host: `${host}/x` }],
    ['Host and X-Forwarded-Port disagreeing with the connection (no trustProxy)',
      { Origin: 'https://127.0.0.1', Host: '127.0.0.1:443', 'X-Forwarded-Port': '443', 'X-Forwarded-Proto': 'https' }],
    ['X-Forwarded-Host is not consulted', { Origin: 'http://evil.com', Host: host, 'X-Forwarded-Host': 'evil.com' }],
    ['a second Host header', { Origin: `http://${host}` }]
  ]
  for (const [what, headers] of refused) {
    if (what === 'a second Host header') {
      const res = await rawHttp(port, handshake('/ws', port, { Host: [host, 'evil.com'], Origin: 'http://evil.com' }), ANSWER)
      t.ok(res.status === 400 || res.status === 403, `${what}: ${res.status} (never 101)`)
      continue
    }
    t.equal(await status(port, headers), 403, `403: ${what}`)
  }
})

t.test('isSameOrigin (unit): host and port must agree with the connection', async (t) => {
  t.equal(isSameOrigin('http://example.com', 'example.com', 80), true)
  t.equal(isSameOrigin('https://example.com', 'example.com', 443), true)
  t.equal(isSameOrigin('https://EXAMPLE.com:443', 'example.COM', 443), true)
  t.equal(isSameOrigin('http://example.com', 'example.com', 8080), false, 'Host port defaults to 80 but the connection is on 8080')
  t.equal(isSameOrigin('http://example.com:8080', 'example.com:8080', 80), false, 'Host claims 8080, connection on 80')
  t.equal(isSameOrigin('http://example.com', undefined, 80), false, 'no Host')
  t.equal(isSameOrigin('http://example.com.', 'example.com.', 80), false, 'trailing dot')
  t.equal(isSameOrigin('http://a@example.com', 'example.com', 80), false)
  t.equal(isSameOrigin('null', 'example.com', 80), false)
})
