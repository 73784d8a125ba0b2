// The Origin policy: exact (normalised) origins, wildcard subdomains at a label boundary, RegExps,
// functions, the same-origin default, requireOrigin, and `null`.
import t, { type Test } from 'tap'
import type { FastifyRequest } from 'fastify'
import { compileOrigins, parseOrigin, parseHost, isSameOrigin, type OriginsOption } from '../../lib/http/origin.js'
import type { HandshakeRejectedError } from '../../lib/index.js'
import { buildApp, listen, handshake, rawHttp, openWs, type HeaderOverrides } from '../helpers/index.js'

const fakeRequest = {} as FastifyRequest

function allows (option: OriginsOption, origin: string): boolean | Promise<boolean> {
  return compileOrigins(option)(origin, fakeRequest)
}

t.test('parseOrigin: strict serialisation, normalised', async (t) => {
  t.same(parseOrigin('https://App.Example.COM'), { scheme: 'https', host: 'app.example.com', port: 443 })
  t.same(parseOrigin('HTTP://example.com:8080'), { scheme: 'http', host: 'example.com', port: 8080 })
  t.same(parseOrigin('http://[::1]:3000'), { scheme: 'http', host: '[::1]', port: 3000 })
  for (const bad of ['null', 'example.com', 'https://example.com/', 'https://example.com/path', 'https://user@example.com',
    'https://example.com:99999', 'https://exa mple.com', 'https://example..com', 'https://example.com.', 'ftp://example.com',
    'https://', '', 'https://example.com?x', 'https://example.com#x', 'https://exa_mple.com']) {
    t.equal(parseOrigin(bad), null, JSON.stringify(bad))
  }
  t.equal(parseOrigin('https://' + 'a'.repeat(3000) + '.com'), null, 'overlong')
})

t.test('parseHost', async (t) => {
  t.same(parseHost('Example.com:8080'), { host: 'example.com', port: 8080 })
  t.same(parseHost('example.com'), { host: 'example.com', port: undefined })
  t.same(parseHost('[::1]:80'), { host: '[::1]', port: 80 })
  t.equal(parseHost('a b'), null)
  t.equal(parseHost('example.com:80:80'), null)
})

t.test('exact origins are compared normalised', async (t) => {
  const opt = 'https://app.example.com'
  t.equal(allows(opt, 'https://app.example.com'), true)
  t.equal(allows(opt, 'HTTPS://APP.EXAMPLE.COM'), true, 'scheme and host are case-insensitive')
  t.equal(allows(opt, 'https://app.example.com:443'), true, 'the default port is the same origin')
  t.equal(allows(opt, 'http://app.example.com'), false, 'another scheme')
  t.equal(allows(opt, 'https://app.example.com:8443'), false, 'another port')
  t.equal(allows(opt, 'https://app.example.com.evil.net'), false)
  t.equal(allows(opt, 'https://evilapp.example.com'), false)
  t.equal(allows(opt, 'https://example.com'), false)
  t.equal(allows(opt, 'https://app.example.com/'), false, 'not an origin serialisation')
  t.equal(allows(opt, 'https://app.example.com, https://evil.net'), false, 'two Origin headers joined')
  t.equal(allows('HTTPS://App.Example.com:443', 'https://app.example.com'), true, 'the pattern is normalised too')
  t.equal(allows('http://localhost:3000', 'http://localhost:3000'), true)
  t.equal(allows('http://localhost:3000', 'http://localhost'), false)
  t.equal(allows(['https://a.example', 'https://b.example'], 'https://b.example'), true, 'a list')
  t.equal(allows(['https://a.example', 'https://b.example'], 'https://c.example'), false)
})

t.test('wildcards match subdomains at a label boundary only', async (t) => {
  const opt = 'https://*.example.com'
  t.equal(allows(opt, 'https://app.example.com'), true)
  t.equal(allows(opt, 'https://a.b.example.com'), true, 'any depth')
  t.equal(allows(opt, 'https://APP.Example.com'), true)
  t.equal(allows(opt, 'https://example.com'), false, 'the apex is not a subdomain')
  t.equal(allows(opt, 'https://evilexample.com'), false, 'no label boundary')
  t.equal(allows(opt, 'https://example.com.evil.net'), false, 'suffix after the domain')
  t.equal(allows(opt, 'https://app.example.com.evil.net'), false)
  t.equal(allows(opt, 'https://.example.com'), false, 'empty label')
  t.equal(allows(opt, 'http://app.example.com'), false, 'scheme must match')
  t.equal(allows(opt, 'https://app.example.com:8443'), false, 'port must match')
  t.equal(allows('https://*.example.com:8443', 'https://app.example.com:8443'), true)
  t.equal(allows('https://*.example.com:8443', 'https://app.example.com'), false)
})

t.test('RegExp patterns (global flag safe), null only when listed', async (t) => {
  const re = /^https:\/\/(a|b)\.example\.org$/g
  t.equal(allows(re, 'https://a.example.org'), true)
  t.equal(allows(re, 'https://a.example.org'), true, 'lastIndex of a /g RegExp does not leak between calls')
  t.equal(allows(re, 'https://c.example.org'), false)
  t.equal(allows([re, 'https://x.example'], 'https://x.example'), true, 'mixed list')
  t.equal(allows('https://x.example', 'null'), false, 'null is not an origin')
  t.equal(allows(['https://x.example', 'null'], 'null'), true, 'null when listed')
  t.equal(allows('null', 'https://x.example'), false)
})

t.test('invalid patterns throw at compile time', async (t) => {
  t.throws(() => compileOrigins('example.com'), /not an origin/)
  t.throws(() => compileOrigins(['https://ok.example', 'https://bad.example/path']), /bad\.example/)
  t.throws(() => compileOrigins('https://*.'), /not an origin/)
})

t.test('functions are passed through', async (t) => {
  const seen: string[] = []
  const fn = (origin: string) => { seen.push(origin); return origin.endsWith('.ok') }
  t.equal(allows(fn, 'https://x.ok'), true)
  t.equal(allows(fn, 'https://x.no'), false)
  t.same(seen, ['https://x.ok', 'https://x.no'])
  t.equal(await allows(async (o) => o === 'https://a', 'https://a'), true)
})

t.test('isSameOrigin: Origin against Host and the connection port', async (t) => {
  t.equal(isSameOrigin('http://example.com:8080', 'example.com:8080', 8080), true)
  t.equal(isSameOrigin('http://EXAMPLE.com:8080', 'example.COM:8080', 8080), true)
  t.equal(isSameOrigin('http://example.com', 'example.com', 80), true, 'default port on both sides')
  t.equal(isSameOrigin('https://example.com', 'example.com', 443), true)
  t.equal(isSameOrigin('http://example.com', 'example.com:80', 80), true)
  t.equal(isSameOrigin('http://example.com', 'example.com', 8080), false, 'Host omits the port but the connection is on 8080')
  t.equal(isSameOrigin('http://example.com:80', 'example.com:80', 8080), false, 'Host disagrees with the connection port')
  t.equal(isSameOrigin('http://example.com:8080', 'example.com:8081', 8080), false)
  t.equal(isSameOrigin('http://evil.com:8080', 'example.com:8080', 8080), false)
  t.equal(isSameOrigin('null', 'example.com', 80), false)
  t.equal(isSameOrigin('http://example.com', undefined, 80), false)
  t.equal(isSameOrigin('http://example.com', 'bad host', 80), false)
  t.equal(isSameOrigin('http://example.com', 'example.com', undefined), true, 'unknown connection port: Host decides')
})

t.test('over TCP', async (t) => {
  const { app, logs } = await buildApp()
  const hello = (socket: { send (d: string): boolean }) => { socket.send('hello') }
  app.get('/same', { websocket: true }, hello)
  app.get('/exact', { websocket: { origins: 'https://app.example.com' } }, hello)
  app.get('/wild', { websocket: { origins: 'https://*.example.com' } }, hello)
  app.get('/regexp', { websocket: { origins: /^https:\/\/[a-z]+\.example\.org$/ } }, hello)
  app.get('/null', { websocket: { origins: ['null', 'https://app.example.com'] } }, hello)
  app.get('/required', { websocket: { origins: 'https://app.example.com', requireOrigin: true } }, hello)
  const calls: Array<{ origin: string, url: string }> = []
  app.get('/fn', {
    websocket: { origins: (origin, request) => { calls.push({ origin, url: request.url }); return origin === 'https://fn.example' } }
  }, hello)
  app.get('/async-fn', {
    websocket: {
      origins: async (origin) => {
        await new Promise((resolve) => setTimeout(resolve, 10))
        return origin === 'https://async.example'
      }
    }
  }, hello)
  app.get('/fn-throws', { websocket: { origins: () => { throw new Error('sync origin failure') } } }, hello)
  app.get('/fn-rejects', { websocket: { origins: async () => { throw new Error('async origin failure') } } }, hello)
  const port = await listen(app)
  t.teardown(() => app.close())

  async function status (path: string, headers: Record<string, string | string[] | null>): Promise<number> {
    const r = await rawHttp(port, handshake(path, port, headers))
    return r.status
  }
  async function accepted (t: Test, path: string, headers: HeaderOverrides) {
    const ws = await openWs(t, port, path, headers)
    t.equal((await ws.nextFrame()).payload.toString(), 'hello', `${path} handler ran`)
  }

  t.test('same-origin default', async (t) => {
    await accepted(t, '/same', { Origin: `http://127.0.0.1:${port}` })
    await accepted(t, '/same', { Origin: `HTTP://127.0.0.1:${port}` })
    await accepted(t, '/same', { Origin: null })
    t.equal(await status('/same', { Origin: `http://localhost:${port}` }), 403, 'another host name')
    t.equal(await status('/same', { Origin: `http://127.0.0.1:${port + 1}` }), 403, 'another port')
    t.equal(await status('/same', { Origin: 'null' }), 403, 'null refused')
    // Host and Origin agree with each other, but not with the port the client connected to.
    t.equal(await status('/same', { Host: '127.0.0.1', Origin: 'http://127.0.0.1' }), 403, 'Host without the connection port')
    t.equal(await status('/same', { Host: '127.0.0.1:80', Origin: 'http://127.0.0.1:80' }), 403, 'Host claims port 80')
  })

  t.test('exact origins, normalised', async (t) => {
    await accepted(t, '/exact', { Origin: 'https://app.example.com' })
    await accepted(t, '/exact', { Origin: 'https://APP.example.com:443' })
    await accepted(t, '/exact', { Origin: null })
    t.equal(await status('/exact', { Origin: 'http://app.example.com' }), 403)
    t.equal(await status('/exact', { Origin: 'https://app.example.com.evil.net' }), 403)
    t.equal(await status('/exact', { Origin: ['https://evil.net', 'https://app.example.com'] }), 403, 'two Origin headers')
    t.equal(await status('/exact', { Origin: 'null' }), 403)
  })

  t.test('wildcards', async (t) => {
    await accepted(t, '/wild', { Origin: 'https://a.example.com' })
    await accepted(t, '/wild', { Origin: 'https://deep.a.example.com' })
    t.equal(await status('/wild', { Origin: 'https://example.com.evil.net' }), 403)
    t.equal(await status('/wild', { Origin: 'https://evilexample.com' }), 403)
    t.equal(await status('/wild', { Origin: 'https://example.com' }), 403)
  })

  t.test('RegExp', async (t) => {
    await accepted(t, '/regexp', { Origin: 'https://abc.example.org' })
    t.equal(await status('/regexp', { Origin: 'https://abc.example.org.evil' }), 403)
  })

  t.test('null when listed', async (t) => {
    await accepted(t, '/null', { Origin: 'null' })
    await accepted(t, '/null', { Origin: 'https://app.example.com' })
  })

  t.test('requireOrigin', async (t) => {
    const r = await rawHttp(port, handshake('/required', port, { Origin: null }))
    t.equal(r.status, 403)
    t.match(JSON.parse(r.body), { message: /Origin header required/ })
    await accepted(t, '/required', { Origin: 'https://app.example.com' })
  })

  t.test('functions, sync and async, get the origin and the request', async (t) => {
    await accepted(t, '/fn?x=1', { Origin: 'https://fn.example' })
    t.equal(await status('/fn', { Origin: 'https://other.example' }), 403)
    t.same(calls, [{ origin: 'https://fn.example', url: '/fn?x=1' }, { origin: 'https://other.example', url: '/fn' }])
    await accepted(t, '/async-fn', { Origin: 'https://async.example' })
    t.equal(await status('/async-fn', { Origin: 'https://other.example' }), 403)
  })

  t.test('a function that throws or rejects: 500, logged, no upgrade', async (t) => {
    t.equal(await status('/fn-throws', { Origin: 'https://x.example' }), 500)
    t.equal(await status('/fn-rejects', { Origin: 'https://x.example' }), 500)
    t.ok(logs.lines.some((l) => (l.err as { message?: string } | undefined)?.message === 'sync origin failure'), 'sync error logged')
    t.ok(logs.lines.some((l) => (l.err as { message?: string } | undefined)?.message === 'async origin failure'), 'async error logged')
  })

  t.test('a refusal is 403 with a reason, and the origin is logged', async (t) => {
    const r = await rawHttp(port, handshake('/exact', port, { Origin: 'https://attacker.example' }))
    t.equal(r.statusLine, 'HTTP/1.1 403 Forbidden')
    t.equal(r.headers['sec-websocket-accept'], undefined)
    const body = JSON.parse(r.body) as { statusCode: number, error: string, message: string }
    t.same(body, { statusCode: 403, error: 'Forbidden', message: 'Origin "https://attacker.example" is not allowed' })
    const lines = logs.lines.filter((l) => l.origin === 'https://attacker.example' && /WebSocket upgrade refused/.test(l.msg))
    t.equal(lines.length, 1, 'logged once, with the origin')
    const line = lines[0]
    t.equal(line?.level, 30, 'at info level, like every refusal')
    t.ok(line?.reqId !== undefined, 'through request.log')
  })
})

t.test('injectWS: the origin option, and refusals reject with the status', async (t) => {
  const { app } = await buildApp({ ports: [80], origins: ['https://*.example.net'] })
  app.get('/', { websocket: true }, (socket) => { socket.send('in memory') })
  await app.ready()
  t.teardown(() => app.close())
  const ws = await app.injectWS('/', { origin: 'https://a.example.net' })
  t.teardown(() => ws.terminate())
  const message = await new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())))
  t.equal(message, 'in memory')
  const err = await app.injectWS('/', { origin: 'https://example.net.evil' }).then(() => null, (e: unknown) => e as HandshakeRejectedError)
  t.equal(err?.statusCode, 403)
  t.equal(err?.code, 'FST_WS_HANDSHAKE_REJECTED')
  t.match(err?.message, /not allowed/)
})
