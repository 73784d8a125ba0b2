/**
 * A topic's recent messages in memory, bounded by count and by age, for resuming (`subscribe(topic, { since })`)
 * with the in-memory broker. The Redis broker keeps the same history in a Redis stream instead.
 */
import type { TopicMessage } from './envelope.js'

export interface HistoryLimits {
  /** Messages kept per topic; 0 turns history (and so resuming) off. */
  size: number
  /** How long a message is kept, in milliseconds. */
  ttl: number
}

interface Entry {
  message: TopicMessage
  at: number
}

export class MemoryHistory {
  private entries: Entry[] = []
  private head = 0
  private readonly limits: HistoryLimits

  constructor (limits: HistoryLimits) {
    this.limits = limits
  }

  push (message: TopicMessage, now: number): void {
    if (this.limits.size === 0) return
    this.entries.push({ message, at: now })
    if (this.entries.length - this.head > this.limits.size) this.head++
    this.trim(now)
  }

  /** Drop what is past its age, and compact once half the array is dropped entries. */
  trim (now: number): void {
    const oldest = now - this.limits.ttl
    while (this.head < this.entries.length && this.entries[this.head].at < oldest) this.head++
    if (this.head > 32 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head)
      this.head = 0
    }
  }

  get empty (): boolean {
    return this.head === this.entries.length
  }

  /** Everything the history still holds, oldest first. */
  all (now: number): TopicMessage[] {
    this.trim(now)
    const out: TopicMessage[] = []
    for (let i = this.head; i < this.entries.length; i++) out.push(this.entries[i].message)
    return out
  }

  /** The messages after `offset` up to `last`, or null when the history no longer holds all of them. */
  after (offset: number, last: number, now: number): TopicMessage[] | null {
    if (offset >= last) return []
    this.trim(now)
    const first = this.head < this.entries.length ? this.entries[this.head].message.offset : last + 1
    if (first > offset + 1) return null
    const out: TopicMessage[] = []
    for (let i = this.head + (offset + 1 - first); i < this.entries.length; i++) out.push(this.entries[i].message)
    return out
  }
}
