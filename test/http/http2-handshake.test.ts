// The RFC 8441 header checks on their own (lib/http/http2-handshake.ts): every refusal with its status, and the
// 200's headers. Node's HTTP/2 layer refuses most malformed pseudo-headers before they get here; these checks
// still hold for whatever reaches them.
import t from 'tap'
import { authorityOf, checkExtendedConnect, connectKind, connectResponse } from '../../lib/http/http2-handshake.js'

const valid = {
  ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/chat', ':authority': 'example.com', 'sec-websocket-version': '13'
}

t.test('connectKind', async (t) => {
  t.equal(connectKind(valid), 'websocket')
  t.equal(connectKind({ ...valid, ':protocol': 'WebSocket' }), 'websocket', 'upgrade tokens are case-insensitive')
  t.equal(connectKind({ ...valid, ':protocol': 'connect-udp' }), 'other')
  t.equal(connectKind({ ':method': 'CONNECT', ':authority': 'example.com:443' }), 'tunnel')
})

t.test('checkExtendedConnect', async (t) => {
  t.equal(checkExtendedConnect(valid), null, 'a valid request')
  t.equal(checkExtendedConnect({ ...valid, 'sec-websocket-version': ' 13 ' }), null, 'the version may be padded')
  t.equal(checkExtendedConnect({ ...valid, 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' }), null, 'a key is not used, not refused')
  const cases: Array<[string, Record<string, string | undefined>, number, RegExp]> = [
    ['GET', { ':method': 'GET' }, 400, /extended CONNECT/],
    ['no :protocol', { ':protocol': undefined }, 400, /extended CONNECT/],
    ['another :protocol', { ':protocol': 'h3' }, 400, /extended CONNECT/],
    ['no :authority', { ':authority': undefined }, 400, /:authority/],
    ['empty :authority', { ':authority': '' }, 400, /:authority/],
    ['no :path', { ':path': undefined }, 400, /:path/],
    ['no :scheme', { ':scheme': undefined }, 400, /:scheme/],
    ['a content-length', { 'content-length': '0' }, 400, /Content-Length: "0"/],
    ['no version', { 'sec-websocket-version': undefined }, 426, /only 13/],
    ['version 8', { 'sec-websocket-version': '8' }, 426, /only 13/]
  ]
  for (const [what, change, status, reason] of cases) {
    const rejection = checkExtendedConnect({ ...valid, ...change })
    t.equal(rejection?.status, status, `${what}: ${status}`)
    t.match(rejection?.reason, reason, `${what}: reason`)
  }
  t.same(checkExtendedConnect({ ...valid, 'sec-websocket-version': '7' })?.headers, { 'sec-websocket-version': '13' }, '426 names the version')
  t.equal(checkExtendedConnect({ ...valid, ':authority': ['a.example', 'b.example'] }), null, 'repeated values: the first is read')
})

t.test('authorityOf and connectResponse', async (t) => {
  t.equal(authorityOf(valid), 'example.com')
  t.equal(authorityOf({ host: 'h.example:8443' }), 'h.example:8443', 'Host when there is no :authority')
  t.equal(authorityOf({}), undefined)
  t.same(connectResponse('', ''), { ':status': 200 })
  t.same(connectResponse('chat.v1', 'permessage-deflate'), { ':status': 200, 'sec-websocket-protocol': 'chat.v1', 'sec-websocket-extensions': 'permessage-deflate' })
})
