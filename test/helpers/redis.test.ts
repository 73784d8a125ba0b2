// The Redis harness: a standalone server answers PING, survives SIGKILL + restart on the same port, and a
// 3-master cluster comes up with cluster_state:ok on every node; stop() leaves no process behind, and neither
// does a test process that exits or is killed without calling it.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { ping, redisCommand, startRedis, startRedisCluster } from './redis.js'
import { delay, waitFor, within } from './wait.js'

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('startRedis: PING, SIGKILL, restart on the same port, stop', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  t.equal(redis.url, `redis://127.0.0.1:${redis.port}`)
  t.equal(await redisCommand(redis.port, ['PING']), 'PONG')

  const firstPid = redis.pid
  if (firstPid === undefined) throw new Error('no pid while running')
  await redis.kill('SIGKILL')
  t.equal(redis.pid, undefined, 'no pid once killed')
  t.notOk(alive(firstPid), 'the first process is gone')
  t.equal(await ping(redis.port), false, 'nothing answers on the port while it is down')

  await redis.restart()
  t.not(redis.pid, firstPid, 'a new process')
  t.equal(await ping(redis.port), true, 'PING works again on the same port')

  const pid = redis.pid
  await redis.stop()
  await redis.stop() // idempotent
  t.notOk(pid !== undefined && alive(pid), 'stop() ended the process')
  t.equal(await ping(redis.port), false)
})

t.test('startRedis: the harness arguments and extra args reach the server', async (t) => {
  const redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] })
  t.teardown(redis.stop)
  t.same(await redisCommand(redis.port, ['CONFIG', 'GET', 'bind']), ['bind', '127.0.0.1'])
  t.same(await redisCommand(redis.port, ['CONFIG', 'GET', 'save']), ['save', ''])
  t.same(await redisCommand(redis.port, ['CONFIG', 'GET', 'appendonly']), ['appendonly', 'no'])
  t.same(await redisCommand(redis.port, ['CONFIG', 'GET', 'maxmemory-policy']), ['maxmemory-policy', 'noeviction'])
})

t.test('startRedis: a port that is already taken rejects with the server output', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  await t.rejects(startRedis({ port: redis.port }), /exited .* before answering PING[\s\S]*in use/i)
})

t.test('startRedisCluster: 3 masters, cluster_state:ok on each, all slots assigned, stop', async (t) => {
  const cluster = await startRedisCluster()
  t.teardown(cluster.stop)
  t.equal(cluster.nodes.length, 3)
  const ports = new Set(cluster.nodes.map((n) => n.port))
  t.equal(ports.size, 3, 'distinct ports')
  for (const node of cluster.nodes) {
    t.equal(node.url, `redis://127.0.0.1:${node.port}`)
    const info = await redisCommand(node.port, ['CLUSTER', 'INFO'])
    t.match(info, /cluster_state:ok/)
    t.match(info, /cluster_slots_assigned:16384/)
    t.match(info, /cluster_known_nodes:3/)
  }
  const pids = cluster.nodes.map((n) => n.pid)
  await cluster.stop()
  for (const pid of pids) t.notOk(pid !== undefined && alive(pid), `node ${pid} ended`)
})

// A child test process that starts a server, then exits without stop() ('exit') or is SIGKILLed ('kill').
async function orphanCheck (t: Test, how: 'exit' | 'kill'): Promise<void> {
  const code = `
    const { startRedis } = await import(${JSON.stringify(new URL('./redis.ts', import.meta.url).href)})
    const r = await startRedis()
    process.stdout.write(JSON.stringify({ port: r.port, dir: r.dir }) + '\\n')
    process.stdin.once('data', () => process.exit(0))
  `
  const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  await waitFor(() => out.includes('\n'), 10000, 'the child to report its redis port')
  const { port, dir } = JSON.parse(out) as { port: number, dir: string }
  t.ok(await ping(port), 'the child started a server')
  if (how === 'kill') {
    child.kill('SIGKILL')
    t.teardown(() => rmSync(dir, { recursive: true, force: true })) // only the exit hook removes it
  } else {
    child.stdin.write('exit\n')
  }
  await within(new Promise((resolve) => child.once('exit', resolve)), 5000, 'the child to exit')
  let down = false
  for (let i = 0; i < 50 && !down; i++) {
    down = !(await ping(port, 200))
    if (!down) await delay(20)
  }
  t.ok(down, 'the server went with the test process')
  if (how === 'exit') t.notOk(existsSync(dir), 'the exit hook removed its dir')
}

t.test('a server does not outlive a test process that exits without stop()', (t) => orphanCheck(t, 'exit'))
t.test('a server does not outlive a test process killed with SIGKILL (PR_SET_PDEATHSIG via setpriv)', { skip: existsSync('/usr/bin/setpriv') ? false : 'no setpriv' }, (t) => orphanCheck(t, 'kill'))
