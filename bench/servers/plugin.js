// fastify-rfc6455 (this repo, built into dist/) on Fastify: echo route on `/`,
// topic fan-out: /sub subscribes to 'bench', each message on /pub is published to 'bench',
// JSON echo (`json` scenario): /json with route message schemas (parsed, validated, serialized by the plugin),
// /json-unvalidated with JSON.parse and JSON.stringify by hand and no schema.
import Fastify from 'fastify'
import { parseServerArgs, announceReady } from './common.js'
import { SayMessage, SaidMessage } from './json-messages.js'

const { port, ctlPort, deflate } = parseServerArgs()

let websocket
try {
  websocket = (await import('../../dist/lib/index.js')).default
} catch (err) {
  process.stderr.write(`plugin server: cannot load ../../dist/lib/index.js (run \`npm run build\` first): ${err.message}\n`)
  process.exit(2)
}

const app = Fastify({ logger: false })
await app.register(websocket, { ports: 'any', origins: () => true, ...(deflate ? { perMessageDeflate: true } : {}) })

app.get('/', { websocket: true }, (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
})

app.get('/sub', { websocket: true }, (socket) => {
  if (typeof socket.subscribe === 'function') socket.subscribe('bench')
})

app.get('/pub', { websocket: true }, (socket) => {
  const wss = app.websocketServer
  if (!wss || typeof wss.publish !== 'function') {
    // Fan-out unsupported: the load generator sees the close and skips the scenario.
    socket.close(1011, 'publish unsupported')
    return
  }
  socket.on('message', (data, isBinary) => { wss.publish('bench', data, { binary: isBinary }) })
})

app.get('/json', { websocket: { messages: { receive: SayMessage, send: SaidMessage } } }, (socket) => {
  // A message that is not JSON or does not match SayMessage closes the socket with 1007 before reaching here.
  socket.on('message', (msg) => { socket.sendMessage({ type: 'said', text: msg.text, n: msg.n }) })
})

app.get('/json-unvalidated', { websocket: true }, (socket) => {
  socket.on('message', (data) => {
    let msg
    try { msg = JSON.parse(data.toString()) } catch { socket.close(1007, 'Invalid JSON'); return }
    socket.send(JSON.stringify({ type: 'said', text: msg.text, n: msg.n }))
  })
})

await app.listen({ port, host: '127.0.0.1' })
await announceReady('plugin', app.server.address().port, ctlPort, () => app.close())
