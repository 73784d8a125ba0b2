/**
 * One topic's subscribers on this instance, and the one owner of delivering to them: a message is framed once
 * (envelope.ts) and the same bytes are written to every socket. A socket that is catching up (resuming from a
 * position, while the broker fetches what it missed) has the live messages that arrive meanwhile queued for it
 * instead, so the switch from history to live has no gap and no duplicate: see LocalTopic.finishCatchUp().
 * A socket that speaks the `fastify-rfc6455.v1` envelope always gets the JSON envelope (its client needs the
 * positions), whatever the broker's `envelope`: that second frame is also built once per message.
 */
import { speaksEnvelope, writeFrame, type WebSocket } from '../socket/websocket.js'
import { frameTopicMessage, type TopicEnvelope, type TopicMessage } from './envelope.js'
import type { SubscribeResult, TopicGapReason, TopicPosition } from './types.js'

interface Queued {
  offset: number
  frame: Buffer
}

/**
 * A socket catching up: while its replay is read, the live messages are queued; once written, a replay may have
 * gone past what this instance has delivered live yet (the history is read on another connection than the
 * subscription's): the socket then skips live messages up to `floor` before it joins the live set.
 */
interface CatchUp {
  queue: Queued[] | null
  floor: number
}

export class LocalTopic {
  readonly name: string
  /** Sockets receiving live messages. */
  readonly sockets = new Set<WebSocket>()
  /** Sockets catching up, each with the live messages that arrived since it started. */
  private catchingUp: Map<WebSocket, CatchUp> | null = null

  constructor (name: string) {
    this.name = name
  }

  get size (): number {
    return this.sockets.size + (this.catchingUp === null ? 0 : this.catchingUp.size)
  }

  /** Remove a socket, live or catching up. Returns whether it was there. */
  delete (socket: WebSocket): boolean {
    if (this.sockets.delete(socket)) return true
    return this.catchingUp !== null && this.catchingUp.delete(socket)
  }

  /** Live messages for `socket` are queued until finishCatchUp(). */
  startCatchUp (socket: WebSocket): void {
    if (this.catchingUp === null) this.catchingUp = new Map()
    this.catchingUp.set(socket, { queue: [], floor: 0 })
  }

  /**
   * Finish a resume (after startCatchUp()) and say how it went, the same for every broker: `since` from another
   * epoch, or ahead of the topic's `last` offset, or whose messages the history no longer holds all of (`replay`
   * null) is a gap, and nothing is replayed; else the replay is written and the socket goes live. `replay`: the
   * messages after `since` (everything the history holds for 'history'); `delivered`: see finishCatchUp().
   */
  finishResume (
    socket: WebSocket, envelope: TopicEnvelope, since: TopicPosition | 'history', epoch: string, last: number,
    delivered: number, replay: readonly TopicMessage[] | null
  ): SubscribeResult {
    let reason: TopicGapReason | null = null
    if (since !== 'history') {
      if (since.epoch !== epoch) reason = 'epoch-changed'
      else if (since.offset > last) reason = 'unknown-position'
      else if (replay === null) reason = 'history-expired'
    }
    const from = reason === null && since !== 'history' ? since.offset : 0
    const done = this.finishCatchUp(socket, envelope, reason === null ? replay ?? [] : [], from, delivered)
    if (done === null) return { status: 'cancelled', topic: this.name }
    const offset = Math.max(done.last, last)
    if (reason !== null) return { status: 'gap', topic: this.name, epoch, offset, reason }
    return { status: 'recovered', topic: this.name, epoch, offset, replayed: done.replayed }
  }

  /** A resume whose history could not be read (the broker is unreachable): live from here, and said so. */
  abandonResume (socket: WebSocket, envelope: TopicEnvelope, epoch: string, delivered: number): SubscribeResult {
    const done = this.finishCatchUp(socket, envelope, [], 0, delivered)
    if (done === null) return { status: 'cancelled', topic: this.name }
    return { status: 'gap', topic: this.name, epoch, offset: done.last, reason: 'broker-unavailable' }
  }

  /**
   * Write the replayed messages (in order, offsets after `since`), then the queued live ones the replay did not
   * already cover, and make the socket live; if the replay went past `delivered` (the last offset this instance
   * delivered live), live messages up to the replay's end are skipped for this socket first. Returns the number of
   * messages replayed and the last offset written (or `since` when none), or null when the socket left meanwhile.
   */
  finishCatchUp (
    socket: WebSocket, envelope: TopicEnvelope, replay: readonly TopicMessage[], since: number, delivered: number
  ): { replayed: number, last: number } | null {
    const entry = this.catchingUp?.get(socket)
    if (entry === undefined || entry.queue === null) return null
    const queued = entry.queue
    let last = since
    let replayed = 0
    const own = speaksEnvelope(socket) ? 'json' : envelope
    for (const message of replay) {
      if (message.offset <= last) continue
      writeFrame(socket, frameTopicMessage(own, message))
      last = message.offset
      replayed++
    }
    for (const q of queued) {
      if (q.offset <= last) continue
      writeFrame(socket, q.frame)
      last = q.offset
    }
    if (last > delivered) {
      entry.queue = null
      entry.floor = last
    } else {
      this.catchingUp!.delete(socket)
      this.sockets.add(socket)
    }
    return { replayed, last }
  }

  /** Deliver one message to every subscriber but `except`. Returns the number of sockets written to. */
  deliver (envelope: TopicEnvelope, message: TopicMessage, except: WebSocket | undefined): number {
    if (this.size === 0) return 0
    const frame = frameTopicMessage(envelope, message)
    let json: Buffer | null = envelope === 'json' ? frame : null
    let sent = 0
    for (const socket of this.sockets) {
      if (socket === except) continue
      const f = speaksEnvelope(socket) ? (json ??= frameTopicMessage('json', message)) : frame
      if (writeFrame(socket, f)) sent++
    }
    if (this.catchingUp !== null && this.catchingUp.size > 0) {
      for (const [socket, entry] of this.catchingUp) {
        const f = speaksEnvelope(socket) ? (json ??= frameTopicMessage('json', message)) : frame
        if (entry.queue !== null) {
          if (socket !== except) entry.queue.push({ offset: message.offset, frame: f })
        } else if (message.offset > entry.floor) {
          // Past the replay's end: live from here.
          this.catchingUp.delete(socket)
          this.sockets.add(socket)
          if (socket !== except && writeFrame(socket, f)) sent++
        }
      }
    }
    return sent
  }
}
