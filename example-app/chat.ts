/**
 * Chat room logic and the `chat.v1` wire protocol of the example app.
 *
 * The protocol is declared once, as TypeBox schemas: the server's route validates every inbound message
 * against `ClientMessage` before a session sees it, serializes every reply with `ServerMessage`, and the
 * TypeScript types below are derived from the same schemas. Kept free of any Fastify / plugin import so it
 * can be read (and tested) on its own: the server wires it to real sockets, to topics and to a presence store.
 *
 * A room's conversation is its topic: what is published to `room:<name>` (chat lines, joins, leaves, presence)
 * is the room's log, numbered by the topic broker. A page receives the log as envelopes
 * `{ topic, epoch, offset, data }` (the broker's 'json' envelope); a newcomer gets the recent log replayed from
 * the broker's history, and a page that reconnects (to this instance or another) sends the last position it saw
 * and gets exactly what it missed, or a `reset` when the history cannot tell.
 */
import { Type } from 'typebox'
import type { Static } from 'typebox'

/** Room names accepted in `/chat/:room`. */
export const ROOM_PATTERN = '^[a-z0-9-]{1,32}$'
/** Nicknames: 1-24 letters, digits, `_` or `-`. */
export const NICK_PATTERN = '^[A-Za-z0-9_-]+$'
export const MAX_NICK_LENGTH = 24
export const MAX_TEXT_LENGTH = 500
/** Events of a room kept for newcomers and for resuming (the topic broker's history size). */
export const HISTORY_SIZE = 100
/** The subprotocol spoken on `/chat/:room`. */
export const SUBPROTOCOL = 'chat.v1'

// ---------------------------------------------------------------------------
// Wire messages

const Nick = Type.String({ minLength: 1, maxLength: MAX_NICK_LENGTH, pattern: NICK_PATTERN })

/** A position in a room's log, as the envelopes carry it. */
export const Position = Type.Object({
  epoch: Type.String({ maxLength: 64 }),
  offset: Type.Integer({ minimum: 0 })
}, { additionalProperties: false })
export type Position = Static<typeof Position>

/**
 * client -> server: enter the room under a nickname (unique in the room). `session` identifies the page across
 * reconnections (it may take its own nickname back at once); `since` is the last position it saw, to resume.
 */
export const JoinRequest = Type.Object({
  type: Type.Literal('join'),
  nick: Nick,
  session: Type.Optional(Type.String({ minLength: 8, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' })),
  since: Type.Optional(Position)
})
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
  'bad_text',
  'unavailable'
])
export type ErrorCode = Static<typeof ErrorCode>

export const ErrorMessage = Type.Object({ type: Type.Literal('error'), code: ErrorCode, message: Type.String() })
export type ErrorMessage = Static<typeof ErrorMessage>

/** What the room's log carries (published to the room's topic, received inside envelopes). */
export const RoomEvent = Type.Union([
  Type.Object({ type: Type.Literal('joined'), nick: Type.String() }),
  Type.Object({ type: Type.Literal('left'), nick: Type.String() }),
  Type.Object({ type: Type.Literal('presence'), nicks: Type.Array(Type.String()) }),
  ChatLine
])
export type RoomEvent = Static<typeof RoomEvent>

/** server -> client, directly (not through the room's log). */
export const ServerMessage = Type.Union([
  /** Joined: the room's log follows (replayed, then live), then `synced`. */
  Type.Object({
    type: Type.Literal('welcome'),
    room: Type.String(),
    nick: Type.String(),
    presence: Type.Array(Type.String())
  }),
  /** The log before this point was replayed (`replayed` events); what follows is live. */
  Type.Object({ type: Type.Literal('synced'), replayed: Type.Integer() }),
  /** The position sent to resume could not be honoured: drop what is shown, the recent log follows again. */
  Type.Object({ type: Type.Literal('reset'), reason: Type.String() }),
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
  const field = first === undefined ? undefined : first.instancePath !== '' ? first.instancePath.split('/')[1] : first.params.missingProperty
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

/** Who is in which room: in memory for one instance, in Redis for several (presence-store.ts). */
export interface PresenceStore {
  /**
   * Take `nick` in `room` for `owner` (`<session>/<connection>`); false when another session holds it. The same
   * session may take it over (a page that reconnects before its old connection is noticed gone).
   */
  add (room: string, nick: string, owner: string): Promise<boolean>
  /** Give `nick` back if `owner` still holds it; whether it did. */
  remove (room: string, nick: string, owner: string): Promise<boolean>
  list (room: string): Promise<string[]>
}

/** The session part of an owner (`<session>/<connection>`). */
export function sessionOf (owner: string): string {
  const slash = owner.indexOf('/')
  return slash < 0 ? owner : owner.slice(0, slash)
}

/** What a session needs from its connection. */
export interface Member {
  /** Sends one message to this connection only. */
  send (msg: ServerMessage): void
  /** Receive the room's log: replayed from `since` (or the recent history), then live. */
  subscribe (topic: string, since: Position | undefined): Promise<SubscribeOutcome>
  /** Stops receiving the room's log. */
  unsubscribe (topic: string): void
  /** Publish to the room's log, except to this connection. */
  publish (topic: string, event: RoomEvent, exceptMe: boolean): Promise<void>
  /** Whether the connection is still open. */
  readonly open: boolean
}

/** How a subscription went: `gap` when `since` could not be honoured. */
export type SubscribeOutcome = { ok: true, replayed: number } | { ok: false, reason: string }

export function roomTopic (room: string): string {
  return 'room:' + room
}

/** One connection's state machine: connected -> joining -> joined -> gone. */
export class Session {
  #nick: string | undefined
  #session = ''
  #joining = false
  #gone = false

  constructor (
    private readonly room: string,
    private readonly presence: PresenceStore,
    private readonly member: Member,
    private readonly now: () => number = Date.now
  ) {}

  get nick (): string | undefined {
    return this.#nick
  }

  /** Handles one message from the client, already validated against `ClientMessage` by the route. */
  async receive (msg: ClientMessage): Promise<void> {
    if (this.#gone) return
    if (msg.type === 'join') await this.#join(msg.nick, msg.session, msg.since)
    else await this.#say(msg.text)
  }

  async #join (nick: string, session: string | undefined, since: Position | undefined): Promise<void> {
    if (this.#nick !== undefined || this.#joining) {
      this.member.send(errorMessage('already_joined', `already joined as ${this.#nick ?? nick}`))
      return
    }
    this.#joining = true
    const connection = Math.random().toString(36).slice(2)
    const owner = `${session ?? 'anonymous-' + connection}/${connection}`
    if (!await this.presence.add(this.room, nick, owner)) {
      this.#joining = false
      this.member.send(errorMessage('nick_taken', `"${nick}" is already in this room`))
      return
    }
    this.#nick = nick
    this.#session = owner
    if (this.#gone || !this.member.open) {
      await this.#leave()
      return
    }
    const topic = roomTopic(this.room)
    this.member.send({ type: 'welcome', room: this.room, nick, presence: await this.presence.list(this.room) })
    // The log: what this page missed since `since`, or the recent history for a newcomer; then live.
    let outcome = await this.member.subscribe(topic, since)
    if (!outcome.ok) {
      // The position cannot be honoured (the log was reset, or it is older than the history): start over.
      this.member.unsubscribe(topic)
      this.member.send({ type: 'reset', reason: outcome.reason })
      outcome = await this.member.subscribe(topic, undefined)
    }
    this.member.send({ type: 'synced', replayed: outcome.ok ? outcome.replayed : 0 })
    this.#joining = false
    await this.member.publish(topic, { type: 'joined', nick }, true)
    await this.member.publish(topic, { type: 'presence', nicks: await this.presence.list(this.room) }, false)
  }

  async #say (raw: string): Promise<void> {
    if (this.#nick === undefined || this.#joining) {
      this.member.send(errorMessage('not_joined', 'send {"type":"join","nick":...} first'))
      return
    }
    // The schema allows 1-MAX_TEXT_LENGTH characters with a non-blank one, so the trimmed text is never empty.
    const line: ChatLine = { type: 'message', nick: this.#nick, text: raw.trim(), ts: this.now() }
    try {
      await this.member.publish(roomTopic(this.room), line, false)
    } catch {
      // The broker refused it (Redis unreachable): say so instead of pretending it was sent.
      this.member.send(errorMessage('unavailable', 'the message could not be delivered; try again'))
    }
  }

  /** The connection closed: leave the room (once). */
  async close (): Promise<void> {
    if (this.#gone) return
    this.#gone = true
    if (this.#nick !== undefined && !this.#joining) await this.#leave()
  }

  async #leave (): Promise<void> {
    const nick = this.#nick
    if (nick === undefined) return
    this.#nick = undefined
    const topic = roomTopic(this.room)
    this.member.unsubscribe(topic)
    // Taken over by the same page on a new connection: it is still there, say nothing.
    if (!await this.presence.remove(this.room, nick, this.#session)) return
    await this.member.publish(topic, { type: 'left', nick }, false)
    await this.member.publish(topic, { type: 'presence', nicks: await this.presence.list(this.room) }, false)
  }
}

/** Presence in this process only (the embedded default). */
export class MemoryPresence implements PresenceStore {
  readonly #rooms = new Map<string, Map<string, string>>()

  async add (room: string, nick: string, session: string): Promise<boolean> {
    let nicks = this.#rooms.get(room)
    if (nicks === undefined) {
      nicks = new Map()
      this.#rooms.set(room, nicks)
    }
    const holder = nicks.get(nick)
    if (holder !== undefined && sessionOf(holder) !== sessionOf(session)) return false
    nicks.set(nick, session)
    return true
  }

  async remove (room: string, nick: string, owner: string): Promise<boolean> {
    const nicks = this.#rooms.get(room)
    if (nicks === undefined || nicks.get(nick) !== owner) return false
    nicks.delete(nick)
    if (nicks.size === 0) this.#rooms.delete(room)
    return true
  }

  async list (room: string): Promise<string[]> {
    return [...(this.#rooms.get(room)?.keys() ?? [])].sort((a, b) => a.localeCompare(b))
  }
}
