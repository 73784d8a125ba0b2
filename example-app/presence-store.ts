/**
 * Presence shared by every instance of the example app on one Redis: who is in which room. A nickname is a member
 * of a sorted set scored by when it expires; the instance holding it refreshes it while the connection lives, so
 * the nicknames of an instance that dies without closing disappear after PRESENCE_TTL_MS. The owner of a nickname
 * (`<session>/<connection>`) is kept beside it, so a page that reconnects elsewhere takes its own name back.
 * Uses the app's ioredis client; clocks of the instances are assumed close (one machine, or NTP).
 */
import type { Redis } from 'ioredis'
import type { PresenceStore } from './chat.js'

export const PRESENCE_TTL_MS = 30_000

const ADD = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local holder = redis.call('HGET', KEYS[2], ARGV[1])
  if holder and string.match(holder, '^[^/]*') ~= string.match(ARGV[2], '^[^/]*') then return 0 end
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
`

const REMOVE = `
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`

const REFRESH = `
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
`

function keys (room: string): [string, string] {
  return [`chat:{${room}}:nicks`, `chat:{${room}}:owners`]
}

export class RedisPresence implements PresenceStore {
  readonly #redis: Redis
  /** What this instance holds: `room \n nick` → owner. */
  readonly #held = new Map<string, string>()
  readonly #timer: NodeJS.Timeout

  constructor (redis: Redis) {
    this.#redis = redis
    this.#timer = setInterval(() => { this.#refresh() }, PRESENCE_TTL_MS / 3)
    this.#timer.unref()
  }

  async add (room: string, nick: string, owner: string): Promise<boolean> {
    const ok = await this.#redis.eval(ADD, 2, ...keys(room), nick, owner, Date.now(), PRESENCE_TTL_MS) === 1
    if (ok) this.#held.set(`${room}\n${nick}`, owner)
    return ok
  }

  async remove (room: string, nick: string, owner: string): Promise<boolean> {
    if (this.#held.get(`${room}\n${nick}`) === owner) this.#held.delete(`${room}\n${nick}`)
    return await this.#redis.eval(REMOVE, 2, ...keys(room), nick, owner) === 1
  }

  async list (room: string): Promise<string[]> {
    const nicks = await this.#redis.zrangebyscore(keys(room)[0], Date.now(), '+inf')
    return nicks.sort((a, b) => a.localeCompare(b))
  }

  #refresh (): void {
    for (const [key, owner] of this.#held) {
      const [room, nick] = key.split('\n') as [string, string]
      this.#redis.eval(REFRESH, 2, ...keys(room), nick, owner, Date.now(), PRESENCE_TTL_MS).catch(() => {})
    }
  }

  close (): void {
    clearInterval(this.#timer)
  }
}
