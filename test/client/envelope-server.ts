// A server of the client's wire format written by hand (JSON.parse / JSON.stringify in a plain route of the
// plugin), so the client is tested against the spec, not against the plugin's own implementation of it.
// Each connection's first frame, the client's {"resume"}, is kept apart (resumes).
// Requests: { echo } is answered with { echo }; { never: true } is never answered; { fail: code } gets an "e" reply.
// Plain messages are recorded; { reply: x } makes the server send { m: x } back; { close: [code, reason] } closes.
import { createServer, connect as tcpConnect, type Socket, type Server } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../helpers/index.js'
import type { WebSocket } from '../../lib/socket/websocket.js'
import type { WebSocketPluginOptions } from '../../lib/index.js'
import { SUBPROTOCOL } from '../../lib/client/index.js'

export type Frame = Record<string, unknown>

export interface EnvelopeServer {
  app: FastifyInstance
  port: number
  /** Every frame the server received, parsed, in order (all connections), but each connection's first {"resume"}. */
  frames: Frame[]
  /** Per connection, the positions of its first frame, a {"resume"} (or 'missing' when the first frame was another). */
  resumes: Array<Frame | 'missing'>
  sockets: WebSocket[]
  /** Send a request to the client on socket `n` (default: the latest) and resolve with its reply frame. */
  request (message: unknown, n?: number): Promise<Frame>
  /** Send a raw frame (an object, stringified) to the latest socket. */
  push (frame: Frame): void
  close (): Promise<void>
}

export interface EnvelopeServerOptions {
  /** Listen on this port (a restart on the same port). */
  port?: number
  /** Answer probes ({"p"}). Default true. */
  answerProbes?: boolean
  /** Offer no subprotocol back (a server that does not speak the format). */
  noProtocol?: boolean
  /** The plugin's origins option (a page served through a proxy on another port). */
  origins?: WebSocketPluginOptions['origins']
  /** Add routes of its own (a page) before listening. */
  setup?: (app: FastifyInstance) => void
}

export async function startEnvelopeServer (options: EnvelopeServerOptions = {}): Promise<EnvelopeServer> {
  const { app } = await buildApp(options.origins === undefined ? {} : { origins: options.origins }, {}, 'warn')
  const frames: Frame[] = []
  const resumes: Array<Frame | 'missing'> = []
  const sockets: WebSocket[] = []
  const waiting = new Map<number, (frame: Frame) => void>()
  let nextId = 0
  // A raw route (no message schemas) that selects the subprotocol itself: the plugin reserves a route that lists
  // it in `protocols` for its own implementation of the envelope, which is not what is tested here.
  const selectProtocol = (offered: readonly string[]): string => options.noProtocol !== true && offered.includes(SUBPROTOCOL) ? SUBPROTOCOL : ''
  app.get('/env', { websocket: { selectProtocol, protocolRequired: false } }, (socket) => {
    sockets.push(socket)
    let first = true
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Frame
      if (first) {
        first = false
        resumes.push(typeof frame.resume === 'object' && frame.resume !== null ? frame.resume as Frame : 'missing')
        if ('resume' in frame) return
      }
      frames.push(frame)
      if (typeof frame.p === 'number') {
        if (options.answerProbes !== false) socket.send(JSON.stringify({ P: frame.p }))
      } else if (typeof frame.q === 'number') {
        const m = frame.m as Frame | null
        if (m !== null && typeof m === 'object' && m.never === true) return
        if (m !== null && typeof m === 'object' && typeof m.fail === 'string') socket.send(JSON.stringify({ r: frame.q, e: m.fail }))
        else socket.send(JSON.stringify({ r: frame.q, m: { echo: m } }))
      } else if (typeof frame.r === 'number') {
        waiting.get(frame.r)?.(frame)
      } else if ('m' in frame) {
        const m = frame.m as Frame | null
        if (m !== null && typeof m === 'object' && 'reply' in m) socket.send(JSON.stringify({ m: m.reply }))
        if (m !== null && typeof m === 'object' && Array.isArray(m.close)) socket.close(m.close[0] as number, m.close[1] as string)
      }
    })
  })
  options.setup?.(app)
  await app.listen({ host: '127.0.0.1', port: options.port ?? 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return {
    app,
    port: address.port,
    frames,
    resumes,
    sockets,
    request (message, n = sockets.length - 1) {
      const id = ++nextId
      return new Promise<Frame>((resolve) => {
        waiting.set(id, resolve)
        sockets[n]!.send(JSON.stringify({ q: id, m: message }))
      })
    },
    push (frame) {
      sockets[sockets.length - 1]!.send(JSON.stringify(frame))
    },
    async close () {
      for (const s of sockets) s.terminate()
      await app.close()
    }
  }
}

/** Timers the test drives: `advance(ms)` runs what falls due, in order. */
export class FakeClock {
  t = 0
  #timers = new Map<number, { at: number, fn: () => void }>()
  #next = 0
  now = (): number => this.t
  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = ++this.#next
    this.#timers.set(id, { at: this.t + ms, fn })
    return id
  }

  clearTimeout = (id: unknown): void => { this.#timers.delete(id as number) }
  /** Pending timers' delays from now. */
  get pending (): number[] { return [...this.#timers.values()].map((x) => x.at - this.t) }
  advance (ms: number): void {
    const end = this.t + ms
    for (;;) {
      let first: [number, { at: number, fn: () => void }] | undefined
      for (const e of this.#timers) if (e[1].at <= end && (first === undefined || e[1].at < first[1].at)) first = e
      if (first === undefined) break
      this.#timers.delete(first[0])
      this.t = first[1].at
      first[1].fn()
    }
    this.t = end
  }
}

export interface Proxy { port: number, freeze (): void, close (): Promise<void> }

/** A TCP proxy to `target`; freeze() makes the current connections swallow everything without closing. */
export async function startProxy (target: number): Promise<Proxy> {
  const pairs: Array<{ a: Socket, b: Socket, frozen: boolean }> = []
  const server: Server = createServer((a) => {
    const b = tcpConnect(target, '127.0.0.1')
    const pair = { a, b, frozen: false }
    pairs.push(pair)
    a.on('data', (d) => { if (!pair.frozen) b.write(d) })
    b.on('data', (d) => { if (!pair.frozen) a.write(d) })
    const end = (): void => { if (!pair.frozen) { a.destroy(); b.destroy() } }
    a.on('close', end).on('error', () => {})
    b.on('close', end).on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as { port: number }).port,
    freeze () { for (const p of pairs) p.frozen = true },
    async close () {
      for (const p of pairs) { p.a.destroy(); p.b.destroy() }
      await new Promise((resolve) => server.close(resolve))
    }
  }
}
