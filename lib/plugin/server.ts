/**
 * `app.websocketServer`: the open sockets, topic publishing, and shutdown.
 */
import { OPCODE_BINARY, OPCODE_TEXT } from '../protocol/constants.js'
import { encodeFrame } from '../protocol/sender.js'
import { FST_WS_INVALID_TOPIC } from '../errors.js'
import type { TopicBroker } from './topics.js'
import type { WebSocket, SendData } from '../socket/websocket.js'

export interface PublishOptions {
  /** Send as binary. Default: true for buffers, false for strings. */
  binary?: boolean
  /** A socket that must not receive it (typically the sender). */
  except?: WebSocket
}

export class WebSocketServer {
  /** Every open socket this plugin accepted. */
  readonly clients: ReadonlySet<WebSocket>
  /** @internal */
  readonly _clients = new Set<WebSocket>()
  readonly topics: TopicBroker
  /** @internal Set when the app closes: new upgrades are refused. */
  _closing = false

  constructor (topics: TopicBroker) {
    this.clients = this._clients
    this.topics = topics
  }

  /** Frame `data` once and write the same bytes to every subscriber of `topic`. Returns the number of recipients. */
  publish (topic: string, data: SendData, options?: PublishOptions): number {
    if (typeof topic !== 'string' || topic.length === 0) throw new FST_WS_INVALID_TOPIC('a topic is a non-empty string')
    let payload: Buffer
    let binary: boolean
    if (typeof data === 'string') {
      payload = Buffer.from(data)
      binary = options?.binary === true
    } else {
      payload = Buffer.isBuffer(data)
        ? data
        : data instanceof ArrayBuffer ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
      binary = options?.binary !== false
    }
    if (this.topics.subscriberCount(topic) === 0) return 0
    const frame = encodeFrame(binary ? OPCODE_BINARY : OPCODE_TEXT, payload)
    return this.topics.publish(topic, frame, options?.except)
  }

  subscriberCount (topic: string): number {
    return this.topics.subscriberCount(topic)
  }

  /** @internal Close every socket with 1001 and resolve once all are closed (each is destroyed after its closeTimeout). */
  _closeAll (): Promise<void> {
    this._closing = true
    const pending: Promise<void>[] = []
    for (const socket of this._clients) {
      if (socket.readyState === socket.CLOSED) continue
      pending.push(new Promise((resolve) => socket.once('close', () => resolve())))
      socket.close(1001, 'Server shutting down')
    }
    return Promise.all(pending).then(() => undefined)
  }
}
