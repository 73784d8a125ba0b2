/**
 * app.injectWS(): a real handshake and real frames over an in-memory stream
 * pair, with no port. Resolves to a client-role WebSocket; a refused
 * handshake rejects with FST_WS_HANDSHAKE_REJECTED carrying the status.
 */
import { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { OutgoingHttpHeaders } from 'node:http'
import { duplexPair, type DuplexEnd } from './duplex-pair.js'
import { buildRequestHeaders, checkResponse, clientConnectionOptions, parseResponseHead, type AcceptedHandshake } from './client-handshake.js'
import { HandshakeRejectedError } from '../errors.js'
export type { HandshakeRejectedError } from '../errors.js'
import { openWebSocket, startWebSocket, type WebSocket, type SocketLog } from '../socket/websocket.js'
import { PerMessageDeflate } from '../extensions/permessage-deflate/codec.js'
import type { PerMessageDeflateOptions } from '../extensions/permessage-deflate/options.js'
import { validateDeflateOptions } from '../plugin/options.js'

export interface InjectWSOptions {
  /** Extra request headers (they override the generated ones). */
  headers?: OutgoingHttpHeaders
  /** Subprotocols to offer, in order. */
  protocols?: readonly string[]
  /** Origin header to send. Default: none (a non-browser client). */
  origin?: string
  /** The port the fake connection arrives on, for the port policy. Default 80. */
  port?: number
  /** Offer permessage-deflate. Default false. */
  perMessageDeflate?: boolean | PerMessageDeflateOptions
  /** Largest message the client accepts. Default 100 MiB. */
  maxPayload?: number
}

type UpgradeListener = (req: IncomingMessage, socket: DuplexEnd, head: Buffer) => void

const silentLog: SocketLog = { warn () {}, error () {} }
const CLIENT_CONTEXT = { topics: null, messages: null, release: null }
const EMPTY = Buffer.alloc(0)

export function injectWS (onUpgrade: UpgradeListener, path: string, options: InjectWSOptions = {}): Promise<WebSocket> {
  const [client, server] = duplexPair()
  const port = options.port ?? 80
  server.localPort = port
  const key = randomBytes(16).toString('base64')
  const deflateOptions = options.perMessageDeflate === undefined || options.perMessageDeflate === false
    ? null
    : validateDeflateOptions(options.perMessageDeflate === true ? {} : options.perMessageDeflate, 'perMessageDeflate')
  const offer = { port, protocols: options.protocols, origin: options.origin, deflate: deflateOptions, headers: options.headers }
  const req = fakeRequest(server, path, buildRequestHeaders(key, offer))

  return new Promise((resolve, reject) => {
    let received: Buffer = EMPTY
    const onData = (chunk: Buffer): void => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk])
      const response = parseResponseHead(received)
      if (response === null) return
      client.removeListener('data', onData)
      client.removeListener('close', onEarlyClose) // settle with the response, not as an early close
      const status = response.status
      const responseHeaders = response.headers
      if (status !== 101) {
        let body = response.rest.toString()
        client.on('data', (more: Buffer) => { body += more.toString() })
        let settled = false
        const finish = (): void => {
          if (settled) return
          settled = true
          let message = body
          try { message = (JSON.parse(body) as { message?: string }).message ?? body } catch {}
          reject(new HandshakeRejectedError(status, message, responseHeaders, body))
        }
        client.once('end', finish)
        client.once('close', finish)
        return
      }
      // Nothing more is read until the client socket starts (below): no 'data' event may go unheard meanwhile.
      client.pause()
      let accepted: AcceptedHandshake
      try {
        accepted = checkResponse(response, key, offer)
      } catch (err) {
        client.destroy()
        reject(err as Error)
        return
      }
      const ws = clientSocket(client, accepted, deflateOptions, options.maxPayload ?? 100 * 1024 * 1024)
      resolve(ws)
      // Start reading once the code awaiting injectWS() has run and attached its listeners, so that what the
      // handler did at once (send, close, throw, ping) is seen by them, in order.
      setImmediate(startClient, ws, client, Buffer.from(response.rest)) // a copy: the writer may reuse its buffer
    }
    const onEarlyClose = (): void => reject(new Error('Connection closed before the handshake response'))
    client.on('data', onData)
    client.once('close', onEarlyClose)
    onUpgrade(req, server, EMPTY)
  })
}

/** The upgrade request as Node's HTTP server would have parsed it, arriving on `socket`. */
function fakeRequest (socket: DuplexEnd, path: string, headers: Record<string, string>): IncomingMessage {
  const req = new IncomingMessage(socket as unknown as Socket)
  req.method = 'GET'
  req.url = path
  req.httpVersion = '1.1'
  req.httpVersionMajor = 1
  req.httpVersionMinor = 1
  req.headers = headers
  req.push(null)
  return req
}

/** The client-role socket over our end of the pair; it reads nothing until startClient(). */
function clientSocket (
  stream: DuplexEnd, accepted: AcceptedHandshake, deflateOptions: Required<PerMessageDeflateOptions> | null, maxPayload: number
): WebSocket {
  const connection = clientConnectionOptions(maxPayload,
    accepted.params === null ? null : new PerMessageDeflate(accepted.params, 'client', deflateOptions!, maxPayload))
  const ws = openWebSocket(stream, connection, accepted.protocol, accepted.extensions, CLIENT_CONTEXT, silentLog)
  keepClose(ws)
  return ws
}

function startClient (ws: WebSocket, stream: DuplexEnd, head: Buffer): void {
  stream.resume() // takes effect on the next tick, after _start has processed the head (and paused, if it must)
  startWebSocket(ws, head)
}

type CloseListener = (code: number, reason: string) => void

/**
 * A test may attach its 'close' listener after the socket closed (it awaited something else first): such a
 * listener is called once, on a later turn of the event loop, with the code and reason. Listeners present at
 * the close are called by the close itself, as usual.
 */
function keepClose (ws: WebSocket): void {
  let closed: [number, string] | null = null
  ws.on('close', (code, reason) => { closed = [code, reason] })
  EventEmitter.prototype.on.call(ws as EventEmitter, 'newListener', (event: string | symbol, listener: CloseListener) => {
    if (event !== 'close' || closed === null) return
    const [code, reason] = closed
    setImmediate(() => {
      const registered = ws.rawListeners('close').find((l) => l === listener || (l as { listener?: unknown }).listener === listener)
      if (registered === undefined) return // removed before it was told
      if (registered !== listener) ws.removeListener('close', listener) // a once() wrapper: it is done now
      try {
        listener.call(ws, code, reason)
      } catch (err) {
        silentLog.error({ err }, 'WebSocket close listener threw') // as for a listener the close itself calls
      }
    })
  })
}
