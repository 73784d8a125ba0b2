// Browser client for the example chat (no build step; plain ES module).
// Speaks the `chat.v1` subprotocol on ws(s)://<host>/chat/<room>.
// A room's events (lines, joins, leaves, presence) arrive in envelopes {topic, epoch, offset, data}: the page
// remembers the last position it applied and, after a reconnection (to any instance), asks for what it missed
// from there; an event it already has is skipped by its offset, so nothing is shown twice.

const SUBPROTOCOL = 'chat.v1'
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
  /** @type {WebSocket | null} */
  ws: null,
  wanted: false, // the user wants to be in a room (reconnect on loss)
  joined: false, // welcome received on the current socket
  attempt: 0, // consecutive failed connection attempts
  retryTimer: 0,
  retryAt: 0,
  countdown: 0,
  /** @type {{ epoch: string, offset: number } | null} the last room event applied */
  pos: null,
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

function socketUrl (room) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}/chat/${encodeURIComponent(room)}`
}

function send (msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(msg))
    return true
  }
  return false
}

function connect () {
  clearTimeout(state.retryTimer)
  clearInterval(state.countdown)
  state.joined = false
  setStatus('connecting', state.attempt === 0 ? 'connecting…' : `reconnecting… (attempt ${state.attempt})`)

  let ws
  try {
    ws = new WebSocket(socketUrl(state.room), SUBPROTOCOL)
  } catch (err) {
    fail(String(err))
    return
  }
  state.ws = ws

  ws.addEventListener('open', () => {
    if (ws !== state.ws) return
    if (ws.protocol !== SUBPROTOCOL) {
      ws.close(1002, 'subprotocol')
      return
    }
    setStatus('connecting', 'joining…')
    send({ type: 'join', nick: state.nick, session: state.session, ...(state.pos && { since: state.pos }) })
  })

  ws.addEventListener('message', (ev) => {
    if (ws !== state.ws) return
    let msg
    try {
      msg = JSON.parse(ev.data)
    } catch {
      addNotice('server sent invalid JSON', 'error')
      return
    }
    onServerMessage(msg)
  })

  ws.addEventListener('close', (ev) => {
    if (ws !== state.ws) return
    state.ws = null
    const wasJoined = state.joined
    state.joined = false
    if (!state.wanted) {
      setStatus('idle', 'not connected')
      return
    }
    if (wasJoined) addNotice(`connection lost (${ev.code || 'no code'}), reconnecting…`)
    scheduleReconnect()
  })
}

function scheduleReconnect () {
  // Exponential backoff, capped, with jitter in [delay/2, delay).
  const delay = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** state.attempt)
  const wait = Math.round(delay / 2 + Math.random() * delay / 2)
  state.attempt++
  state.retryAt = Date.now() + wait
  showCountdown()
  state.countdown = setInterval(showCountdown, 250)
  state.retryTimer = setTimeout(connect, wait)
}

function onServerMessage (msg) {
  if (typeof msg.offset === 'number' && typeof msg.epoch === 'string' && 'data' in msg) {
    // A room event: skip what was already applied (a replay overlapping what this page saw).
    if (state.pos && state.pos.epoch === msg.epoch && msg.offset <= state.pos.offset) return
    state.pos = { epoch: msg.epoch, offset: msg.offset }
    onRoomEvent(msg.data, !state.synced && !state.resuming)
    return
  }
  switch (msg.type) {
    case 'welcome':
      state.joined = true
      state.synced = false
      state.resuming = state.pos !== null
      state.attempt = 0
      setStatus('open', `connected as ${state.nick}`)
      if (!state.resuming) el.messages.replaceChildren()
      renderPresence(msg.presence)
      showChat(true)
      el.text.focus()
      break
    case 'reset':
      // The position could not be resumed (the room's log restarted, or it is older than the history).
      state.pos = null
      state.resuming = false
      el.messages.replaceChildren()
      addNotice('the conversation was reloaded')
      break
    case 'synced':
      state.synced = true
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
  state.pos = null
  clearTimeout(state.retryTimer)
  clearInterval(state.countdown)
  const ws = state.ws
  state.ws = null
  state.joined = false
  if (ws) ws.close(1000, 'bye')
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

// Retry right away when the network comes back rather than waiting out the backoff.
window.addEventListener('online', () => {
  if (state.wanted && !state.ws) {
    state.attempt = 0
    connect()
  }
})

// Prefill from ?room= and the last nickname used.
{
  const params = new URLSearchParams(location.search)
  const room = params.get('room')
  if (room) el.room.value = room
  try { el.nick.value = params.get('nick') || localStorage.getItem('chat.nick') || '' } catch {}
  setStatus('idle', 'not connected')
}
