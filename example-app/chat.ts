/**
 * Chat room logic and wire types for the example app.
 *
 * Kept free of any Fastify / plugin import so it can be read (and tested) on
 * its own: the server wires it to real sockets and to topic fan-out.
 */

/** Room names accepted in `/chat/:room`. */
export const ROOM_PATTERN = '^[a-z0-9-]{1,32}$'
/** Nicknames: 1-24 letters, digits, `_` or `-`. */
export const NICK_RE = /^[A-Za-z0-9_-]{1,24}$/
export const MAX_TEXT_LENGTH = 500
export const HISTORY_SIZE = 50
/** The subprotocol spoken on `/chat/:room`. */
export const SUBPROTOCOL = 'chat.v1'

// ---------------------------------------------------------------------------
// Wire messages

/** client -> server */
export type ClientMessage =
  | { type: 'join', nick: string }
  | { type: 'message', text: string }

export interface ChatLine {
  type: 'message'
  nick: string
  text: string
  /** server time, ms since the epoch */
  ts: number
}

export type ErrorCode =
  | 'bad_json'
  | 'bad_message'
  | 'unknown_type'
  | 'binary_unsupported'
  | 'not_joined'
  | 'already_joined'
  | 'bad_nick'
  | 'nick_taken'
  | 'bad_text'

/** server -> client */
export type ServerMessage =
  | { type: 'welcome', room: string, nick: string, history: ChatLine[], presence: string[] }
  | { type: 'joined', nick: string }
  | { type: 'left', nick: string }
  | { type: 'presence', nicks: string[] }
  | ChatLine
  | { type: 'error', code: ErrorCode, message: string }

export type ErrorMessage = Extract<ServerMessage, { type: 'error' }>

export function errorMessage (code: ErrorCode, message: string): ErrorMessage {
  return { type: 'error', code, message }
}

export type ParseResult =
  | { ok: true, msg: ClientMessage }
  | { ok: false, error: ErrorMessage }

function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Parses and validates the shape of one text frame from a client. */
export function parseClientMessage (raw: string): ParseResult {
  let data: unknown
  try {
    data = JSON.parse(raw)
  } catch {
    return { ok: false, error: errorMessage('bad_json', 'message is not valid JSON') }
  }
  if (!isRecord(data) || typeof data.type !== 'string') {
    return { ok: false, error: errorMessage('bad_message', 'expected an object with a string "type"') }
  }
  switch (data.type) {
    case 'join':
      if (typeof data.nick !== 'string') {
        return { ok: false, error: errorMessage('bad_nick', '"nick" must be a string') }
      }
      return { ok: true, msg: { type: 'join', nick: data.nick } }
    case 'message':
      if (typeof data.text !== 'string') {
        return { ok: false, error: errorMessage('bad_text', '"text" must be a string') }
      }
      return { ok: true, msg: { type: 'message', text: data.text } }
    default:
      return { ok: false, error: errorMessage('unknown_type', `unknown message type ${JSON.stringify(data.type.slice(0, 32))}`) }
  }
}

// ---------------------------------------------------------------------------
// Rooms

/** What a room needs from a connection: a private channel back to it. */
export interface Member {
  /** Sends one message to this connection only. */
  send (msg: ServerMessage): void
  /** Starts receiving the room's fan-out (called once the member has joined). */
  subscribe (topic: string): void
  /** Stops receiving the room's fan-out. */
  unsubscribe (topic: string): void
}

/** Fan-out to every subscriber of a topic (the plugin's `publish`). */
export type Publish = (topic: string, msg: ServerMessage) => void

export function roomTopic (room: string): string {
  return 'room:' + room
}

class Room {
  readonly nicks = new Set<string>()
  readonly history: ChatLine[] = []
  constructor (readonly name: string) {}

  presence (): string[] {
    return [...this.nicks].sort((a, b) => a.localeCompare(b))
  }

  remember (line: ChatLine): void {
    this.history.push(line)
    if (this.history.length > HISTORY_SIZE) this.history.splice(0, this.history.length - HISTORY_SIZE)
  }
}

/**
 * All rooms of one server. A room's history outlives its members (until the
 * process exits), so a late joiner still sees the recent conversation.
 */
export class Chat {
  readonly #rooms = new Map<string, Room>()
  readonly #publish: Publish
  readonly #now: () => number

  constructor (publish: Publish, now: () => number = Date.now) {
    this.#publish = publish
    this.#now = now
  }

  #room (name: string): Room {
    let room = this.#rooms.get(name)
    if (room === undefined) {
      room = new Room(name)
      this.#rooms.set(name, room)
    }
    return room
  }

  /** Opens a session for one connection in one room. */
  connect (roomName: string, member: Member): Session {
    return new Session(this, this.#room(roomName), member)
  }

  /** @internal */
  _publish (room: Room, msg: ServerMessage): void {
    this.#publish(roomTopic(room.name), msg)
  }

  /** @internal */
  _now (): number {
    return this.#now()
  }
}

/** One connection's state machine: connected -> joined -> gone. */
export class Session {
  #nick: string | undefined
  #gone = false

  constructor (
    private readonly chat: Chat,
    private readonly room: Room,
    private readonly member: Member
  ) {}

  get nick (): string | undefined {
    return this.#nick
  }

  /** Handles one frame from the client. */
  receive (data: Buffer | string, isBinary: boolean): void {
    if (this.#gone) return
    if (isBinary) {
      this.member.send(errorMessage('binary_unsupported', 'send JSON text frames'))
      return
    }
    const parsed = parseClientMessage(typeof data === 'string' ? data : data.toString('utf8'))
    if (!parsed.ok) {
      this.member.send(parsed.error)
      return
    }
    const msg = parsed.msg
    switch (msg.type) {
      case 'join':
        this.#join(msg.nick)
        break
      case 'message':
        this.#say(msg.text)
        break
    }
  }

  #join (nick: string): void {
    if (this.#nick !== undefined) {
      this.member.send(errorMessage('already_joined', `already joined as ${this.#nick}`))
      return
    }
    if (!NICK_RE.test(nick)) {
      this.member.send(errorMessage('bad_nick', 'nickname must be 1-24 letters, digits, "_" or "-"'))
      return
    }
    if (this.room.nicks.has(nick)) {
      this.member.send(errorMessage('nick_taken', `"${nick}" is already in this room`))
      return
    }
    this.#nick = nick
    this.room.nicks.add(nick)
    // Tell the others first, then subscribe, so the newcomer does not get its
    // own "joined"; the welcome carries the state it needs.
    this.chat._publish(this.room, { type: 'joined', nick })
    this.member.send({
      type: 'welcome',
      room: this.room.name,
      nick,
      history: [...this.room.history],
      presence: this.room.presence()
    })
    this.member.subscribe(roomTopic(this.room.name))
    this.chat._publish(this.room, { type: 'presence', nicks: this.room.presence() })
  }

  #say (raw: string): void {
    if (this.#nick === undefined) {
      this.member.send(errorMessage('not_joined', 'send {"type":"join","nick":...} first'))
      return
    }
    const text = raw.trim()
    if (text.length === 0 || text.length > MAX_TEXT_LENGTH) {
      this.member.send(errorMessage('bad_text', `text must be 1-${MAX_TEXT_LENGTH} characters`))
      return
    }
    const line: ChatLine = { type: 'message', nick: this.#nick, text, ts: this.chat._now() }
    this.room.remember(line)
    this.chat._publish(this.room, line)
  }

  /** The connection closed: leave the room (once). */
  close (): void {
    if (this.#gone) return
    this.#gone = true
    const nick = this.#nick
    if (nick === undefined) return
    this.room.nicks.delete(nick)
    this.member.unsubscribe(roomTopic(this.room.name))
    this.chat._publish(this.room, { type: 'left', nick })
    this.chat._publish(this.room, { type: 'presence', nicks: this.room.presence() })
  }
}
