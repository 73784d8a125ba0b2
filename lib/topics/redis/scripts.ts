/**
 * The Lua scripts the Redis broker runs. Each runs atomically in Redis, which is what gives a topic one order on
 * every instance: the offset is taken, the history entry written and the message published in one step, so the
 * pub/sub stream of a topic carries its offsets in increasing order.
 *
 * Keys of one topic share a hash tag (`{…}`), so that on Redis Cluster they and the topic's shard channel live on
 * one slot.
 */

/**
 * KEYS: meta hash, history stream. ARGV: channel, payload, flags ('0' text, '1' binary), origin, candidate epoch,
 * history size, history ttl (ms), meta ttl (ms), '1' to SPUBLISH (sharded) else PUBLISH.
 * Returns { epoch, offset }. The message published is `epoch \n offset \n flags \n origin \n payload`.
 */
export const PUBLISH = `
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local epoch = redis.call('HGET', KEYS[1], 'e')
if offset == 1 or not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[8])
local size = tonumber(ARGV[6])
if size > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', size, '*', 'o', offset, 'f', ARGV[3], 'x', ARGV[4], 'd', ARGV[2])
  redis.call('XTRIM', KEYS[2], 'MINID', '~', now - tonumber(ARGV[7]))
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
local message = epoch .. '\\n' .. offset .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4] .. '\\n' .. ARGV[2]
if ARGV[9] == '1' then
  redis.call('SPUBLISH', ARGV[1], message)
else
  redis.call('PUBLISH', ARGV[1], message)
end
return { epoch, offset }
`

/**
 * KEYS: meta hash, history stream. ARGV: since (an offset, or 'all' for the whole history).
 * Returns { epoch ('' when the topic has no state), last offset, entries after `since` newest first (empty when
 * there are none, or when the history no longer reaches back to `since + 1`: nothing is read then) }; each entry
 * is { id, { 'o', offset, 'f', flags, 'x', origin, 'd', payload } }. The history's length is the publishers'
 * `history.size`, whatever the reader's.
 */
export const RECOVER = `
local meta = redis.call('HMGET', KEYS[1], 'e', 'o')
local epoch = meta[1]
if not epoch then epoch = '' end
local last = tonumber(meta[2]) or 0
if ARGV[1] == 'all' then
  return { epoch, last, redis.call('XREVRANGE', KEYS[2], '+', '-') }
end
local since = tonumber(ARGV[1])
if since < 0 or since >= last then
  return { epoch, last, {} }
end
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #oldest == 0 or tonumber(oldest[1][2][2]) > since + 1 then
  return { epoch, last, {} }
end
return { epoch, last, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', last - since) }
`

/**
 * Presence: each instance's subscriber count of a topic, as hash fields `instance → count:expiresAtMs` (Redis's
 * own clock), so that a killed instance's share expires by itself. KEYS: presence hash. ARGV: instance, count
 * (-1 only reads, 0 removes the field), ttl (ms), and 'w' to only write (returns 0).
 * Otherwise returns the live fields as a flat list { instance, count, … } and drops the expired ones.
 */
export const PRESENCE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], n .. ':' .. (now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif n == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if ARGV[4] == 'w' then return 0 end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local value = all[i + 1]
  local sep = string.find(value, ':', 1, true)
  local expires = sep and tonumber(string.sub(value, sep + 1)) or 0
  if expires < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = string.sub(value, 1, sep - 1)
  end
end
return out
`
