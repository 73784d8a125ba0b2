// Real redis-server processes for tests: a standalone server or a small cluster on free 127.0.0.1 ports, each
// with its own temp dir. Readiness is checked with a raw RESP exchange on a TCP socket (no client library), every
// wait has a deadline, and no server outlives the test process: an 'exit' hook kills the ones still running and,
// where util-linux's setpriv exists, the kernel sends them SIGKILL when the test process dies by any means.
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { createServer, connect, type AddressInfo } from 'node:net'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { delay, within } from './wait.js'

const REDIS_SERVER = 'redis-server'
const REDIS_CLI = 'redis-cli'
const SETPRIV = '/usr/bin/setpriv'
const START_MS = 5000
const STOP_MS = 2000

export interface RedisProcess {
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  /** Its own temp dir (--dir), removed by stop(). */
  readonly dir: string
  /** The server's pid while it runs, else undefined. */
  readonly pid: number | undefined
  /** Send `signal` (default SIGKILL) and wait for the process to exit. No-op when it is not running. */
  kill (signal?: NodeJS.Signals): Promise<void>
  /** Start again on the same port with the same arguments and dir (killing a running one first); waits for PING. */
  restart (): Promise<void>
  /** Stop the server (SIGTERM, then SIGKILL if slow) and remove its dir. Idempotent. */
  stop (): Promise<void>
}

export interface RedisClusterProcess {
  /** The masters, in the order given to `redis-cli --cluster create` (slots split evenly in that order). */
  readonly nodes: RedisProcess[]
  /** Stop every node. Idempotent. */
  stop (): Promise<void>
}

export interface StartRedisOptions {
  /** A fixed port; default: a free one. */
  port?: number
  /** Extra redis-server arguments, appended after the harness's own. */
  args?: string[]
}

export interface StartRedisClusterOptions {
  /** Number of masters (no replicas); default 3. */
  masters?: number
}

// Everything still running or still on disk, for the exit hook.
const liveChildren = new Set<ChildProcess>()
const liveDirs = new Set<string>()
let exitHookInstalled = false

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const child of liveChildren) {
      try { child.kill('SIGKILL') } catch {}
    }
    for (const dir of liveDirs) {
      try { rmSync(dir, { recursive: true, force: true }) } catch {}
    }
  })
}

/** A port that was free a moment ago on 127.0.0.1 (listen on 0, read it, close). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export type RespReply = string | number | null | RespReply[]

/** Encode a command as a RESP array of bulk strings. */
function encodeCommand (args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const arg of args) {
    const b = Buffer.from(arg)
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}

/** Parse one RESP2 reply at `at`: the value and where it ends, or undefined when more bytes are needed. */
function parseReply (buf: Buffer, at: number): { value: RespReply, end: number } | undefined {
  const eol = buf.indexOf('\r\n', at)
  if (eol === -1) return undefined
  const type = String.fromCharCode(buf[at] ?? 0)
  const head = buf.toString('latin1', at + 1, eol)
  switch (type) {
    case '+': return { value: head, end: eol + 2 }
    case '-': throw new Error(`redis error reply: ${head}`)
    case ':': return { value: Number(head), end: eol + 2 }
    case '$': {
      const len = Number(head)
      if (len < 0) return { value: null, end: eol + 2 }
      if (buf.length < eol + 2 + len + 2) return undefined
      return { value: buf.toString('utf8', eol + 2, eol + 2 + len), end: eol + 2 + len + 2 }
    }
    case '*': {
      const n = Number(head)
      if (n < 0) return { value: null, end: eol + 2 }
      const items: RespReply[] = []
      let end = eol + 2
      for (let i = 0; i < n; i++) {
        const item = parseReply(buf, end)
        if (item === undefined) return undefined
        items.push(item.value)
        end = item.end
      }
      return { value: items, end }
    }
    default: throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`)
  }
}

/**
 * Send one command to 127.0.0.1:`port` on a fresh TCP connection and resolve with its reply (a `-ERR` reply
 * rejects). The connection is closed either way; rejects after `ms`.
 */
export function redisCommand (port: number, args: readonly string[], ms = 1000): Promise<RespReply> {
  const socket = connect({ port, host: '127.0.0.1' })
  const reply = new Promise<RespReply>((resolve, reject) => {
    let buf = Buffer.alloc(0)
    socket.on('error', reject)
    socket.on('close', () => reject(new Error(`connection to 127.0.0.1:${port} closed before a reply`)))
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      try {
        const parsed = parseReply(buf, 0)
        if (parsed !== undefined) resolve(parsed.value)
      } catch (err) {
        reject(err)
      }
    })
    socket.write(encodeCommand(args))
  })
  return within(reply, ms, `${args[0] ?? 'a command'} on 127.0.0.1:${port}`).finally(() => socket.destroy())
}

/** True when 127.0.0.1:`port` answers PING with +PONG within `ms`. */
export async function ping (port: number, ms = 500): Promise<boolean> {
  const socket = connect({ port, host: '127.0.0.1' })
  const answered = new Promise<boolean>((resolve) => {
    let text = ''
    socket.on('error', () => resolve(false))
    socket.on('close', () => resolve(false))
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1')
      if (text.includes('\r\n')) resolve(text.startsWith('+PONG'))
    })
    socket.write('PING\r\n')
  })
  try {
    return await within(answered, ms, `PING on 127.0.0.1:${port}`)
  } catch {
    return false
  } finally {
    socket.destroy()
  }
}

/** The process_id that the server on `port` reports in INFO server, if it answers. */
async function serverPid (port: number): Promise<number | undefined> {
  try {
    const info = await redisCommand(port, ['INFO', 'server'], 500)
    const m = typeof info === 'string' ? /process_id:(\d+)/.exec(info) : null
    return m === null ? undefined : Number(m[1])
  } catch {
    return undefined
  }
}

function exited (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

/** Spawn redis-server and wait until it answers PING; rejects (with its output) if it exits first or is slow. */
async function launch (port: number, argv: readonly string[]): Promise<ChildProcess> {
  installExitHook()
  // PR_SET_PDEATHSIG: the kernel kills the server if this process dies without running its exit hook.
  const child = existsSync(SETPRIV)
    ? spawn(SETPRIV, ['--pdeathsig', 'KILL', REDIS_SERVER, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(REDIS_SERVER, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  liveChildren.add(child)
  let output = ''
  const keep = (chunk: Buffer): void => { output = (output + chunk.toString('utf8')).slice(-4000) }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  let spawnError: Error | undefined
  child.on('error', (err) => { spawnError = err })
  child.once('exit', () => { liveChildren.delete(child) })

  const deadline = Date.now() + START_MS
  while (true) {
    if (spawnError !== undefined) throw new Error(`redis-server did not start: ${spawnError.message}`)
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`redis-server on port ${port} exited (${child.exitCode ?? child.signalCode}) before answering PING:\n${output}`)
    }
    // Another server already on the port would answer PING too: only our own pid counts as started.
    if (await ping(port, 200) && await serverPid(port) === child.pid) return child
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      await exited(child)
      throw new Error(`redis-server on port ${port} did not answer PING within ${START_MS} ms:\n${output}`)
    }
    await delay(20)
  }
}

async function killChild (child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
  child.kill(signal)
  await within(exited(child), STOP_MS, `redis-server to exit on ${signal}`)
}

/**
 * Start `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no --dir <tmp> ...args` and wait for PING.
 * Call `t.teardown(r.stop)` right after.
 */
export function startRedis (options: StartRedisOptions = {}): Promise<RedisProcess> {
  const extra = options.args ?? []
  return startRedisWith(options.port, () => extra)
}

/** startRedis, with extra arguments that may depend on the port (cluster config file names). */
async function startRedisWith (fixedPort: number | undefined, extraFor: (port: number) => string[]): Promise<RedisProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'redis-test-'))
  liveDirs.add(dir)
  const argvFor = (port: number): string[] =>
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraFor(port)]

  let port = fixedPort ?? 0
  let child: ChildProcess | undefined
  // A free port can be taken between freePort() and redis's bind: pick another one and try again.
  for (let attempt = 1; child === undefined; attempt++) {
    if (fixedPort === undefined) port = await freePort()
    try {
      child = await launch(port, argvFor(port))
    } catch (err) {
      if (fixedPort !== undefined || attempt >= 3 || !/address already in use/i.test(String(err))) {
        rmSync(dir, { recursive: true, force: true })
        liveDirs.delete(dir)
        throw err
      }
    }
  }

  let stopped = false
  const argv = argvFor(port)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get pid () {
      return child !== undefined && child.exitCode === null && child.signalCode === null ? child.pid : undefined
    },
    kill (signal: NodeJS.Signals = 'SIGKILL') {
      return killChild(child, signal)
    },
    async restart () {
      if (stopped) throw new Error('restart() after stop()')
      await killChild(child, 'SIGKILL')
      child = await launch(port, argv)
    },
    async stop () {
      if (stopped) return
      stopped = true
      try {
        await killChild(child, 'SIGTERM')
      } catch {
        await killChild(child, 'SIGKILL')
      }
      rmSync(dir, { recursive: true, force: true })
      liveDirs.delete(dir)
    }
  }
}

function runCli (args: readonly string[], ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(REDIS_CLI, args, { timeout: ms, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${REDIS_CLI} ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`))
      else resolve(stdout)
    })
  })
}

async function clusterState (port: number): Promise<string | undefined> {
  try {
    const info = await redisCommand(port, ['CLUSTER', 'INFO'], 500)
    return typeof info === 'string' ? /cluster_state:(\w+)/.exec(info)?.[1] : undefined
  } catch {
    return undefined
  }
}

/**
 * Start `masters` cluster-enabled servers (node timeout 2000 ms, no replicas), join them with
 * `redis-cli --cluster create`, and wait until every node reports `cluster_state:ok`. Call `t.teardown(c.stop)`.
 */
export async function startRedisCluster (options: StartRedisClusterOptions = {}): Promise<RedisClusterProcess> {
  const masters = options.masters ?? 3
  if (!Number.isSafeInteger(masters) || masters < 1) throw new RangeError(`masters must be a positive integer, got ${masters}`)
  const nodes: RedisProcess[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()))
  }
  try {
    for (let i = 0; i < masters; i++) {
      // the config file name is relative to the node's own --dir
      nodes.push(await startRedisWith(undefined, (port) =>
        ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000']))
    }
    await runCli(['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], 15000)
    const deadline = Date.now() + 10000
    while (true) {
      const states = await Promise.all(nodes.map((n) => clusterState(n.port)))
      if (states.every((s) => s === 'ok')) break
      if (Date.now() > deadline) throw new Error(`cluster not ok within 10000 ms: ${states.join(', ')}`)
      await delay(50)
    }
  } catch (err) {
    await stop()
    throw err
  }
  return { nodes, stop }
}
