/**
 * A WebSocket for the client in Node versions without a global one: the plugin's own engine in the client role
 * over node:net / node:tls, with the client half of the handshake (lib/testing/client-handshake.ts). It has the
 * few members of the WHATWG WebSocket the client uses, plus what a browser cannot see: the HTTP status of a
 * refused handshake, on the close event (`status`), so the client can stop on a 4xx.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect, rootCertificates } from 'node:tls'
import { randomBytes } from 'node:crypto'
import { buildRequestHeaders, checkResponse, clientConnectionOptions, parseResponseHead, type ClientOffer } from '../testing/client-handshake.js'
import { openWebSocket, startWebSocket, type WebSocket } from '../socket/websocket.js'
import type { WebSocketLike } from './index.js'

const CONNECTION = clientConnectionOptions(100 * 1024 * 1024, null)
const CONTEXT = { topics: null, messages: null, release: null }
const silentLog = { warn () {}, error () {} }
/** The largest response head read before giving up on a server that is not speaking HTTP. */
const MAX_HEAD = 16 * 1024

export class NodeWebSocket implements WebSocketLike {
  protocol = ''
  onopen: ((ev: unknown) => void) | null = null
  onmessage: ((ev: { data: unknown }) => void) | null = null
  onclose: ((ev: { code: number, reason: string, status?: number }) => void) | null = null
  onerror: ((ev: unknown) => void) | null = null
  #socket: Socket
  #ws: WebSocket | null = null
  #done = false

  constructor (url: string, protocols: string | readonly string[], options: { headers?: Record<string, string>, ca?: string | readonly string[] } = {}) {
    const u = new URL(url)
    const secure = u.protocol === 'wss:'
    const port = Number(u.port) || (secure ? 443 : 80)
    const hostname = u.hostname.replace(/^\[(.*)\]$/, '$1')
    const key = randomBytes(16).toString('base64')
    const offer: ClientOffer = {
      port, protocols: typeof protocols === 'string' ? [protocols] : protocols, deflate: null, headers: { host: u.host, ...options.headers }
    }
    const socket = this.#socket = secure
      ? tlsConnect({
        host: hostname, port, servername: isIP(hostname) === 0 ? hostname : undefined, ALPNProtocols: ['http/1.1'],
        ca: options.ca === undefined ? undefined : [...rootCertificates, ...[options.ca].flat()]
      })
      : netConnect({ host: hostname, port })
    socket.setNoDelay(true)
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      let head = `GET ${u.pathname}${u.search} HTTP/1.1\r\n`
      for (const [name, value] of Object.entries(buildRequestHeaders(key, offer))) head += `${name}: ${value}\r\n`
      socket.write(head + '\r\n')
    })
    let received = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk])
      const response = parseResponseHead(received)
      if (response === null) {
        if (received.length > MAX_HEAD) this.#fail(1002, 'Response head too large')
        return
      }
      socket.removeListener('data', onData)
      if (response.status !== 101) return this.#fail(1006, `Handshake refused: ${response.status}`, response.status)
      try {
        const accepted = checkResponse(response, key, offer)
        this.protocol = accepted.protocol
        const ws = this.#ws = openWebSocket(socket, CONNECTION, accepted.protocol, accepted.extensions, CONTEXT, silentLog)
        ws.on('message', (data: Buffer, isBinary: boolean) => this.onmessage?.({ data: isBinary ? data : data.toString() }))
        ws.on('close', (code: number, reason: string) => this.#finish(code, reason))
        ws.on('error', (err) => this.onerror?.(err))
        this.onopen?.({})
        startWebSocket(ws, Buffer.from(response.rest))
      } catch (err) {
        this.onerror?.(err)
        this.#fail(1002, (err as Error).message)
      }
    }
    socket.on('data', onData)
    socket.on('error', (err) => { if (this.#ws === null) this.onerror?.(err) })
    socket.on('close', () => { if (this.#ws === null) this.#finish(1006, '') })
  }

  send (data: string): void {
    this.#ws?.send(data)
  }

  close (code?: number, reason?: string): void {
    if (this.#ws !== null) this.#ws.close(code, reason)
    else this.#fail(1006, '')
  }

  #fail (code: number, reason: string, status?: number): void {
    this.#socket.destroy()
    this.#finish(code, reason, status)
  }

  #finish (code: number, reason: string, status?: number): void {
    if (this.#done) return
    this.#done = true
    this.onclose?.(status === undefined ? { code, reason } : { code, reason, status })
  }
}
