/**
 * app.injectWS(): a real handshake and real frames over an in-memory stream
 * pair, with no port. Resolves to a client-role WebSocket; a refused
 * handshake rejects with FST_WS_HANDSHAKE_REJECTED carrying the status.
 */
import { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import type { OutgoingHttpHeaders } from 'node:http'
import { duplexPair, type DuplexEnd } from './duplex-pair.js'
import { acceptKey } from '../http/handshake.js'
import { FST_WS_HANDSHAKE_REJECTED } from '../errors.js'
import { WebSocket } from '../socket/websocket.js'
import { parseExtensions } from '../http/extension-header.js'
import { acceptClientResponse, clientOffer } from '../extensions/permessage-deflate/negotiation.js'
import { PerMessageDeflate } from '../extensions/permessage-deflate/codec.js'
import type { PerMessageDeflateOptions } from '../extensions/permessage-deflate/options.js'
import { DEFAULTS, validateDeflateOptions } from '../plugin/options.js'
import type { ConnectionOptions } from '../protocol/connection.js'

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

export interface HandshakeRejectedError extends Error {
  code: 'FST_WS_HANDSHAKE_REJECTED'
  statusCode: number
  headers: Record<string, string>
  body: string
}

type UpgradeListener = (req: IncomingMessage, socket: DuplexEnd, head: Buffer) => void

const silentLog = { warn () {}, error () {} }
const CLIENT_CONTEXT = { inboundHighWaterMark: DEFAULTS.inboundHighWaterMark, topics: null, release: null }

export function injectWS (onUpgrade: UpgradeListener, path: string, options: InjectWSOptions = {}): Promise<WebSocket> {
  const [client, server] = duplexPair()
  const port = options.port ?? 80
  server.localPort = port
  const key = randomBytes(16).toString('base64')
  const deflateOptions = options.perMessageDeflate === undefined || options.perMessageDeflate === false
    ? null
    : validateDeflateOptions(options.perMessageDeflate === true ? {} : options.perMessageDeflate, 'perMessageDeflate')
  const headers: Record<string, string> = {
    host: port === 80 ? 'localhost' : `localhost:${port}`,
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': key
  }
  if (options.protocols !== undefined && options.protocols.length > 0) headers['sec-websocket-protocol'] = options.protocols.join(', ')
  if (options.origin !== undefined) headers.origin = options.origin
  if (deflateOptions !== null) headers['sec-websocket-extensions'] = clientOffer(deflateOptions)
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value)
  }
  const req = new IncomingMessage(server as unknown as Socket)
  req.method = 'GET'
  req.url = path
  req.httpVersion = '1.1'
  req.httpVersionMajor = 1
  req.httpVersionMinor = 1
  req.headers = headers
  req.push(null)

  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk])
      const end = received.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = received.subarray(0, end).toString('latin1').split('\r\n')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head[0] ?? '')?.[1] ?? 0)
      const responseHeaders: Record<string, string> = {}
      for (const line of head.slice(1)) {
        const colon = line.indexOf(':')
        if (colon > 0) responseHeaders[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      if (status !== 101) {
        client.removeListener('data', onData)
        client.removeListener('close', onEarlyClose) // settle with the status, not as an early close
        let body = received.subarray(end + 4).toString()
        client.on('data', (more: Buffer) => { body += more.toString() })
        let settled = false
        const finish = (): void => {
          if (settled) return
          settled = true
          let message = body
          try { message = (JSON.parse(body) as { message?: string }).message ?? body } catch {}
          const err = new FST_WS_HANDSHAKE_REJECTED(status, message) as unknown as HandshakeRejectedError
          err.statusCode = status
          err.headers = responseHeaders
          err.body = body
          reject(err)
        }
        client.once('end', finish)
        client.once('close', finish)
        return
      }
      client.removeListener('data', onData)
      client.removeListener('close', onEarlyClose)
      if (responseHeaders['sec-websocket-accept'] !== acceptKey(key)) {
        client.destroy()
        reject(new Error('Invalid Sec-WebSocket-Accept in the server response'))
        return
      }
      let deflate: PerMessageDeflate | null = null
      const extensions = responseHeaders['sec-websocket-extensions'] ?? ''
      const maxPayload = options.maxPayload ?? 100 * 1024 * 1024
      if (extensions !== '') {
        const offers = parseExtensions(extensions)
        const params = deflateOptions !== null && offers !== null ? acceptClientResponse(offers, deflateOptions) : null
        if (params === null) {
          client.destroy()
          reject(new Error(`Server negotiated an extension that was not offered: ${extensions}`))
          return
        }
        deflate = new PerMessageDeflate(params, 'client', deflateOptions!, maxPayload)
      }
      const connection: ConnectionOptions = {
        isServer: false,
        maxPayload,
        closeTimeout: DEFAULTS.closeTimeout,
        sendHighWaterMark: DEFAULTS.sendHighWaterMark,
        maxBufferedAmount: DEFAULTS.maxBufferedAmount,
        drainTimeout: 0,
        heartbeat: null,
        deflate
      }
      const ws = new WebSocket(client, connection, responseHeaders['sec-websocket-protocol'] ?? '', extensions, CLIENT_CONTEXT, silentLog)
      ws._start(received.subarray(end + 4))
      resolve(ws)
    }
    const onEarlyClose = (): void => reject(new Error('Connection closed before the handshake response'))
    client.on('data', onData)
    client.once('close', onEarlyClose)
    onUpgrade(req, server, Buffer.alloc(0))
  })
}
