// StreamSessions (lib/plugin/http2.ts): the HTTP/2 sessions that carried WebSockets, remembered for the GOAWAY of
// app.close(), and forgotten when they close: by every registration that tracked them, not only the last one.
import t from 'tap'
import { EventEmitter } from 'node:events'
import type { ServerHttp2Session } from 'node:http2'
import { StreamSessions } from '../../lib/plugin/http2.js'

class FakeSession extends EventEmitter {
  closed = false
  destroyed = false
  goaways = 0
  close (): void { this.goaways++ }
}

t.test('a closed session is forgotten by each registration that tracked it', async (t) => {
  const first = new StreamSessions()
  const second = new StreamSessions()
  const session = new FakeSession()
  first.add(session as unknown as ServerHttp2Session)
  first.add(session as unknown as ServerHttp2Session) // once per set, whatever the number of streams
  second.add(session as unknown as ServerHttp2Session)
  t.equal(session.listenerCount('close'), 2, "one 'close' listener per registration")
  session.emit('close')
  first.goAway()
  second.goAway()
  t.equal(session.goaways, 0, 'no GOAWAY for a session that already closed')
})

t.test('goAway() closes each open session once and lets go of them', async (t) => {
  const sessions = new StreamSessions()
  const a = new FakeSession()
  const b = new FakeSession()
  sessions.add(a as unknown as ServerHttp2Session)
  sessions.add(b as unknown as ServerHttp2Session)
  sessions.goAway()
  sessions.goAway()
  t.same([a.goaways, b.goaways], [1, 1])
  t.same([a.listenerCount('close'), b.listenerCount('close')], [0, 0], 'no listener left behind')
})
