// Browser client for the example chat (no build step; plain ES modules).
// Talks to ws(s)://<host>/chat/<room> through the plugin's client (/client.js, the fastify-rfc6455.v1 envelope).
import { connect as connectClient } from '/client.js'

// A room's events (lines, joins, leaves, presence) arrive in envelopes {topic, epoch, offset, data}: the client
// remembers the last position, asks for what was missed from there after a reconnection (to any instance), and
// skips an event it already delivered, so nothing is shown twice.

const RETRY_BASE_MS = 500
const RETRY_CAP_MS = 10_000
// Errors after which reconnecting cannot help: go back to the join form.
const FATAL_BEFORE_JOIN = new Set(['bad_nick', 'nick_taken'])

const $ = (id) => document.getElementById(id)
const el = {
  status: $('status'),
  roomLabel: $('room-label'),
  joinForm: $('join-form'),
  nick: $('nick'),
  room: $('room'),
  joinError: $('join-error'),
  chat: $('chat'),
  presence: $('presence'),
  presenceCount: $('presence-count'),
  leave: $('leave'),
  messages: $('messages'),
  sendForm: $('send-form'),
  text: $('text'),
  send: $('send')
}

const state = {
  nick: '',
  room: '',
  /** @type {import('/client.js').Client | null} the plugin's client for the current room */
  client: null,
  wanted: false, // the user wants to be in a room (reconnect on loss)
  joined: false, // welcome received on the current socket
  attempt: 0, // consecutive failed connection attempts
  retryAt: 0,
  countdown: 0,
  haveLog: false, // the page shows the room's log (a reconnection continues it rather than starting over)
  synced: false, // the replayed part of the log is over on the current socket
  session: newSession()
}

function newSession () {
  try {
    const saved = sessionStorage.getItem('chat.session')
    if (saved) return saved
  } catch {}
  const bytes = crypto.getRandomValues(new Uint8Array(12))
  const id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
  try { sessionStorage.setItem('chat.session', id) } catch {}
  return id
}

// --- status indicator ------------------------------------------------------

function setStatus (kind, text) {
  el.status.dataset.state = kind
  el.chat.dataset.state = kind
  el.status.textContent = text
  el.send.disabled = kind !== 'open'
}

function showCountdown () {
  const s = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000))
  setStatus('reconnecting', `offline, reconnecting in ${s}s (attempt ${state.attempt})`)
}

// --- rendering -------------------------------------------------------------

function scrollToEnd () {
  el.messages.scrollTop = el.messages.scrollHeight
}

function fmtTime (ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
}

function addLine (line, extraClass) {
  const li = document.createElement('li')
  li.dataset.type = 'message'
  if (line.nick === state.nick) li.classList.add('mine')
  if (extraClass) li.classList.add(extraClass)
  const meta = document.createElement('span')
  meta.className = 'meta'
  meta.textContent = fmtTime(line.ts)
  const nick = document.createElement('span')
  nick.className = 'nick'
  nick.textContent = line.nick
  const text = document.createElement('span')
  text.className = 'text'
  text.textContent = line.text
  li.append(meta, nick, text)
  el.messages.append(li)
  scrollToEnd()
}

function addNotice (text, kind = 'notice') {
  const li = document.createElement('li')
  li.className = kind === 'error' ? 'notice error' : 'notice'
  li.dataset.type = kind
  li.textContent = text
  el.messages.append(li)
  scrollToEnd()
}

function renderPresence (nicks) {
  el.presence.replaceChildren(...nicks.map((n) => {
    const li = document.createElement('li')
    li.textContent = n
    if (n === state.nick) li.classList.add('me')
    return li
  }))
  el.presenceCount.textContent = `(${nicks.length})`
}

function showChat (on) {
  el.chat.hidden = !on
  el.joinForm.hidden = on
  el.roomLabel.textContent = on ? state.room : ''
}

// --- connection ------------------------------------------------------------
// The plugin's client (served by the app as /client.js) reconnects with backoff, keeps what is sent while
// offline, notices a dead connection, and resumes the room's log from the last position it received, on
// whichever instance it lands.

function send (msg) {
  if (!state.client || !state.joined) return false
  state.client.send(msg)
  return true
}

function connect () {
  state.joined = false
  setStatus('connecting', 'connecting…')
  const client = connectClient(`/chat/${encodeURIComponent(state.room)}`, {
    reconnect: { base: RETRY_BASE_MS, cap: RETRY_CAP_MS }
  })
  state.client = client
  client.on('open', () => {
    if (client !== state.client) return
    setStatus('connecting', 'joining…')
    client.send({ type: 'join', nick: state.nick, session: state.session })
  })
  client.on('message', (msg, topic) => {
    if (client !== state.client) return
    if (topic) onRoomEvent(msg, !state.synced && !state.resuming)
    else onServerMessage(msg)
  })
  client.on('close', (code) => {
    if (client !== state.client) return
    if (state.joined) addNotice(`connection lost (${code || 'no code'}), reconnecting…`)
    state.joined = false
  })
  client.on('reconnecting', (attempt, delay) => {
    if (client !== state.client) return
    state.attempt = attempt
    state.retryAt = Date.now() + delay
    clearInterval(state.countdown)
    showCountdown()
    state.countdown = setInterval(showCountdown, 250)
  })
  client.on('stopped', (why) => {
    if (client !== state.client) return
    if (why.reason !== 'closed') fail(`cannot connect (${why.reason})`)
  })
}

function onServerMessage (msg) {
  switch (msg.type) {
    case 'welcome':
      clearInterval(state.countdown)
      state.joined = true
      state.synced = false
      state.resuming = state.haveLog
      state.attempt = 0
      setStatus('open', `connected as ${state.nick}`)
      if (!state.resuming) el.messages.replaceChildren()
      renderPresence(msg.presence)
      showChat(true)
      el.text.focus()
      break
    case 'reset':
      // The position could not be resumed (the room's log restarted, or it is older than the history).
      state.haveLog = false
      state.resuming = false
      el.messages.replaceChildren()
      addNotice('the conversation was reloaded')
      break
    case 'synced':
      state.synced = true
      state.haveLog = true
      if (state.resuming) addNotice(msg.replayed > 0 ? `reconnected, ${msg.replayed} missed events shown` : 'reconnected')
      else addNotice(`you joined #${state.room}`)
      state.resuming = false
      break
    case 'error':
      if (!state.joined && FATAL_BEFORE_JOIN.has(msg.code)) {
        fail(msg.message)
      } else {
        addNotice(`error: ${msg.message}`, 'error')
      }
      break
    default:
      console.warn('unknown message from server', msg)
  }
}

/** One event of the room's log; `replayed`: part of the history a newcomer is shown. */
function onRoomEvent (msg, replayed) {
  switch (msg.type) {
    case 'joined':
      if (!replayed) addNotice(`${msg.nick} joined`)
      break
    case 'left':
      if (!replayed) addNotice(`${msg.nick} left`)
      break
    case 'presence':
      // A newcomer's replayed presence lists are old: the welcome's is current.
      if (!replayed) renderPresence(msg.nicks)
      break
    case 'message':
      addLine(msg, replayed ? 'history' : undefined)
      break
    default:
      console.warn('unknown room event', msg)
  }
}

/** Stops (no reconnect) and returns to the join form with an error. */
function fail (message) {
  leave()
  el.joinError.textContent = message
}

function leave () {
  state.wanted = false
  state.haveLog = false
  clearInterval(state.countdown)
  const client = state.client
  state.client = null
  state.joined = false
  if (client) client.close(1000, 'bye')
  setStatus('idle', 'not connected')
  showChat(false)
}

// --- UI events -------------------------------------------------------------

el.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault()
  el.joinError.textContent = ''
  state.nick = el.nick.value.trim()
  state.room = el.room.value.trim().toLowerCase()
  state.wanted = true
  state.attempt = 0
  try { localStorage.setItem('chat.nick', state.nick) } catch {}
  history.replaceState(null, '', `?room=${encodeURIComponent(state.room)}`)
  connect()
})

el.sendForm.addEventListener('submit', (ev) => {
  ev.preventDefault()
  const text = el.text.value.trim()
  if (!text) return
  if (send({ type: 'message', text })) el.text.value = ''
})

el.leave.addEventListener('click', () => leave())

// Prefill from ?room= and the last nickname used.
{
  const params = new URLSearchParams(location.search)
  const room = params.get('room')
  if (room) el.room.value = room
  try { el.nick.value = params.get('nick') || localStorage.getItem('chat.nick') || '' } catch {}
  setStatus('idle', 'not connected')
}
