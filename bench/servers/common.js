// Shared plumbing for the benchmark server scripts.
//
// Every server script:
//   - listens on 127.0.0.1 only, on the port given as argv[2] / $PORT (0 = pick a free one);
//   - starts a tiny HTTP control server on 127.0.0.1 (argv[3] / $CTL_PORT, default 0) answering
//       GET /rss  -> {"rss": <bytes>, "heapUsed": <bytes>, "external": <bytes>, "arrayBuffers": <bytes>}
//                    (runs a full GC first when node was started with --expose-gc)
//       GET /exit -> exits the process
//   - prints one line `READY {"port":..,"ctl":..,"pid":..,"name":..}` on stdout once both listen;
//   - exits by itself when stdin closes (the orchestrator died) or after $BENCH_MAX_LIFETIME ms.
import http from 'node:http'

export function parseServerArgs () {
  const args = process.argv.slice(2)
  const flags = new Set(args.filter((a) => a.startsWith('--')))
  const positional = args.filter((a) => !a.startsWith('--'))
  return {
    port: Number(positional[0] ?? process.env.PORT ?? 0),
    ctlPort: Number(positional[1] ?? process.env.CTL_PORT ?? 0),
    deflate: flags.has('--deflate') || process.env.BENCH_DEFLATE === '1'
  }
}

function memorySnapshot () {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc()
    globalThis.gc()
  }
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers }
}

/**
 * @param {string} name       label printed in the READY line
 * @param {number} port       the port the WebSocket server actually listens on
 * @param {number} ctlPort    requested control port (0 = any)
 * @param {() => Promise<void> | void} [shutdown]  called before exiting (at most 200 ms)
 */
export async function announceReady (name, port, ctlPort, shutdown = () => {}) {
  // A benchmark server has nothing to flush: leave at once (a graceful close of
  // thousands of sockets would only slow the orchestrator down). `shutdown` gets
  // a short grace period when it is given.
  let exiting = false
  const exit = (code = 0) => {
    if (exiting) return
    exiting = true
    const hard = setTimeout(() => process.exit(code), 200)
    hard.unref()
    Promise.resolve().then(shutdown).catch(() => {}).finally(() => process.exit(code))
  }

  const ctl = http.createServer((req, res) => {
    if (req.url === '/rss') {
      // Let pending socket work settle for a tick before measuring.
      setImmediate(() => {
        const body = JSON.stringify(memorySnapshot())
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      })
      return
    }
    if (req.url === '/exit') {
      res.end('bye\n')
      setImmediate(() => exit(0))
      return
    }
    res.statusCode = 404
    res.end()
  })
  await new Promise((resolve, reject) => {
    ctl.once('error', reject)
    ctl.listen(ctlPort, '127.0.0.1', resolve)
  })
  const ctlAddr = ctl.address()

  // Exit when the parent goes away (stdin is a pipe from the orchestrator).
  if (!process.stdin.isTTY) {
    process.stdin.on('end', () => exit(0))
    process.stdin.on('error', () => exit(0))
    process.stdin.resume()
  }
  process.on('SIGTERM', () => exit(0))
  process.on('SIGINT', () => exit(0))
  const maxLifetime = Number(process.env.BENCH_MAX_LIFETIME ?? 15 * 60 * 1000)
  setTimeout(() => exit(0), maxLifetime).unref()

  process.stdout.write(`READY ${JSON.stringify({ name, port, ctl: ctlAddr.port, pid: process.pid })}\n`)
}
