/**
 * The port policy: upgrades are accepted only on the ports a deployment
 * expects (80 and 443 by default, as browsers' WebSocket endpoints normally
 * are). The port checked is the one the client connected to; behind a trusted
 * proxy, the forwarded one.
 */
import type { IncomingMessage } from 'node:http'
import proxyAddr from '@fastify/proxy-addr'

export type PortsOption = readonly number[] | 'any'
export type TrustFunction = (address: string, hop: number) => boolean

/** The same trust rules as Fastify's `trustProxy` option. */
export function compileTrust (trustProxy: unknown): TrustFunction | null {
  if (trustProxy === undefined || trustProxy === false || trustProxy === null) return null
  if (typeof trustProxy === 'function') return trustProxy as TrustFunction
  if (trustProxy === true) return () => true
  if (typeof trustProxy === 'number') return () => false
  if (typeof trustProxy === 'string') return proxyAddr.compile(trustProxy.split(',').map((s) => s.trim()))
  return proxyAddr.compile(trustProxy as string[])
}

function lastValue (header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined
  const value = Array.isArray(header) ? header[header.length - 1]! : header
  const comma = value.lastIndexOf(',')
  return (comma === -1 ? value : value.slice(comma + 1)).trim()
}

/** The port the client connected to, or undefined when it cannot be known (in-memory injection). */
export function clientPort (req: IncomingMessage, trust: TrustFunction | null): number | undefined {
  const socket = req.socket
  const local = socket?.localPort
  if (trust !== null && socket?.remoteAddress !== undefined && trust(socket.remoteAddress, 0)) {
    const forwardedPort = lastValue(req.headers['x-forwarded-port'])
    if (forwardedPort !== undefined && /^\d{1,5}$/.test(forwardedPort)) return Number(forwardedPort)
    const proto = lastValue(req.headers['x-forwarded-proto'])?.toLowerCase()
    if (proto === 'https' || proto === 'wss') return 443
    if (proto === 'http' || proto === 'ws') return 80
  }
  return local
}

export function portAllowed (ports: ReadonlySet<number> | null, port: number | undefined): boolean {
  return ports === null || (port !== undefined && ports.has(port))
}
