/**
 * Chat room logic and the `chat.v1` wire protocol of the example app.
 *
 * The protocol is declared once, as TypeBox schemas: the server's route validates every inbound message
 * against `ClientMessage` before a session sees it, serializes every reply with `ServerMessage`, and the
 * TypeScript types below are derived from the same schemas. Kept free of any Fastify / plugin import so it
 * can be read (and tested) on its own: the server wires it to real sockets and to topic fan-out.
 */
import { Type } from 'typebox'
import type { Static } from 'typebox'

/** Room names accepted in `/chat/:room`. */
export const ROOM_PATTERN = '^[a-z0-9-]{1,32}$'
/** Nicknames: 1-24 letters, digits, `_` or `-`. */
export const NICK_PATTERN = '^[A-Za-z0-9_-]+$'
export const MAX_NICK_LENGTH = 24
export const MAX_TEXT_LENGTH = 500
export const HISTORY_SIZE = 50
/** The subprotocol spoken on `/chat/:room`. */
export const SUBPROTOCOL = 'chat.v1'

// ---------------------------------------------------------------------------
// Wire messages

const Nick = Type.String({ minLength: 1, maxLength: MAX_NICK_LENGTH, pattern: NICK_PATTERN })

/** client -> server: enter the room under a nickname (unique in the room). */
export const JoinRequest = Type.Object({ type: Type.Literal('join'), nick: Nick })
/** client -> server: say something. At least one non-blank character; the server trims it. */
export const SayRequest = Type.Object({
  type: Type.Literal('message'),
  text: Type.String({ maxLength: MAX_TEXT_LENGTH, pattern: '\\S' })
})

/** client -> server */
export type ClientMessage = Static<typeof JoinRequest> | Static<typeof SayRequest>
/**
 * What a client may send, chosen by `type`. Written with ajv's `discriminator` keyword over a `oneOf` (TypeBox's
 * Union is an `anyOf`, which reports the errors of every branch): a refused message then carries the error of
 * the branch its `type` chose, or a discriminator error when the type is missing or unknown. The server enables
 * the keyword with ajv's `discriminator: true` option.
 */
export const ClientMessage = Type.Unsafe<ClientMessage>({
  type: 'object',
  required: ['type'],
  discriminator: { propertyName: 'type' },
  oneOf: [JoinRequest, SayRequest]
})

export const ChatLine = Type.Object({
  type: Type.Literal('message'),
  nick: Type.String(),
  text: Type.String(),
  /** server time, ms since the epoch */
  ts: Type.Integer()
})
export type ChatLine = Static<typeof ChatLine>

export const ErrorCode = Type.Enum([
  'bad_json',
  'bad_message',
  'unknown_type',
  'binary_unsupported',
  'not_joined',
  'already_joined',
  'bad_nick',
  'nick_taken',
  'bad_text'
])
export type ErrorCode = Static<typeof ErrorCode>

export const ErrorMessage = Type.Object({ type: Type.Literal('error'), code: ErrorCode, message: Type.String() })
export type ErrorMessage = Static<typeof ErrorMessage>

/** server -> client */
export const ServerMessage = Type.Union([
  Type.Object({
    type: Type.Literal('welcome'),
    room: Type.String(),
    nick: Type.String(),
    history: Type.Array(ChatLine),
    presence: Type.Array(Type.String())
  }),
  Type.Object({ type: Type.Literal('joined'), nick: Type.String() }),
  Type.Object({ type: Type.Literal('left'), nick: Type.String() }),
  Type.Object({ type: Type.Literal('presence'), nicks: Type.Array(Type.String()) }),
  ChatLine,
  ErrorMessage
])
export type ServerMessage = Static<typeof ServerMessage>

export function errorMessage (code: ErrorCode, message: string): ErrorMessage {
  return { type: 'error', code, message }
}

/** The fields of an ajv error object this module reads. */
interface SchemaError {
  keyword: string
  instancePath: string
  params: { missingProperty?: string, error?: string, tagValue?: unknown }
}

/**
 * The reply to a message the route refused (the plugin's 'invalid' event: `reason` and `validation`). ajv stops
 * at the first error, which the discriminator makes the one of the chosen message type; its field names the
 * rule that was broken.
 */
export function invalidMessageReply (reason: 'binary' | 'json' | 'schema', validation: unknown): ErrorMessage {
  if (reason === 'binary') return errorMessage('binary_unsupported', 'send JSON text frames')
  if (reason === 'json') return errorMessage('bad_json', 'message is not valid JSON')
  const first = (Array.isArray(validation) ? validation[0] : undefined) as SchemaError | undefined
  if (first?.keyword === 'discriminator' && first.params.error === 'mapping') {
    return errorMessage('unknown_type', `unknown message type ${JSON.stringify(String(first.params.tagValue).slice(0, 32))}`)
  }
  const field = first === undefined ? undefined : first.instancePath !== '' ? first.instancePath.slice(1) : first.params.missingProperty
  switch (field) {
    case 'nick':
      return errorMessage('bad_nick', `nickname must be 1-${MAX_NICK_LENGTH} letters, digits, "_" or "-"`)
    case 'text':
      return errorMessage('bad_text', `text must be 1-${MAX_TEXT_LENGTH} characters, not all blank`)
    default:
      return errorMessage('bad_message', 'expected an object with "type": "join" or "message"')
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

  /** Handles one message from the client, already validated against `ClientMessage` by the route. */
  receive (msg: ClientMessage): void {
    if (this.#gone) return
    if (msg.type === 'join') this.#join(msg.nick)
    else this.#say(msg.text)
  }

  #join (nick: string): void {
    if (this.#nick !== undefined) {
      this.member.send(errorMessage('already_joined', `already joined as ${this.#nick}`))
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
    // The schema allows 1-MAX_TEXT_LENGTH characters with a non-blank one, so the trimmed text is never empty.
    const text = raw.trim()
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
