/**
 * Topics (publish/subscribe). A published message is framed once and the same
 * bytes are written to every subscriber. The registry sits behind TopicBroker
 * so that a cluster-wide broker can replace the in-memory one without any
 * change to handler code.
 */
import { writeFrame, type WebSocket } from '../socket/websocket.js'

export interface TopicBroker {
  subscribe (socket: WebSocket, topic: string): void
  unsubscribe (socket: WebSocket, topic: string): void
  /** Deliver an already framed message to this process's subscribers; returns how many were written to. */
  publish (topic: string, frame: Buffer, except: WebSocket | undefined): number
  subscriberCount (topic: string): number
}

/** The default broker: subscriptions of this process, in memory. */
export class MemoryTopics implements TopicBroker {
  private readonly topics = new Map<string, Set<WebSocket>>()

  subscribe (socket: WebSocket, topic: string): void {
    let set = this.topics.get(topic)
    if (set === undefined) {
      set = new Set()
      this.topics.set(topic, set)
    }
    set.add(socket)
  }

  unsubscribe (socket: WebSocket, topic: string): void {
    const set = this.topics.get(topic)
    if (set === undefined) return
    set.delete(socket)
    if (set.size === 0) this.topics.delete(topic)
  }

  publish (topic: string, frame: Buffer, except: WebSocket | undefined): number {
    const set = this.topics.get(topic)
    if (set === undefined) return 0
    let sent = 0
    for (const socket of set) {
      if (socket !== except && writeFrame(socket, frame)) sent++
    }
    return sent
  }

  subscriberCount (topic: string): number {
    return this.topics.get(topic)?.size ?? 0
  }
}
