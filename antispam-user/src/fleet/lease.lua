-- antispam fleet lease: one host's share of a tenant's fleet budget, decided on the server in
-- one step (scripts run atomically), with the server's clock (one clock for the whole fleet).
--
-- KEYS[1]  the tenant's bucket: a hash {tokens, ts} (ts in milliseconds of the server's clock)
-- KEYS[2]  the hosts' recent demand: a hash host -> "want:seen_ms:carry" (carry: the fraction
--          of a token its last share left over, so that small shares add up instead of
--          rounding to nothing)
-- ARGV     host, want (tokens), rate (tokens per millisecond), burst (tokens), lease_ms
-- Returns  {granted tokens, tokens left in the bucket, server time in ms}
--
-- The bucket fills at `rate` up to `burst`. A bucket that is not there (a new tenant, or a
-- store that lost its data in a restart) starts EMPTY: a restart never hands out a fresh burst.
-- A host gets what it wants while the bucket covers every live host's demand, else a share in
-- proportion to its demand; never more than the bucket holds. Demand older than one lease
-- (a host partitioned, stopped or killed) no longer counts: its share goes to the others.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local host = ARGV[1]
local want = math.max(0, math.floor(tonumber(ARGV[2])))
local rate = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])

local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
local ts = tonumber(redis.call('HGET', KEYS[1], 'ts'))
if tokens == nil or ts == nil then
  tokens = 0
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
if tokens > burst then
  tokens = burst
end

local carry = 0
local total = want
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local w, seen, c = string.match(all[i + 1], '^(%d+):(%d+):?([%d%.eE%+%-]*)$')
  w = tonumber(w)
  seen = tonumber(seen)
  if w == nil or seen == nil or now - seen > lease_ms then
    redis.call('HDEL', KEYS[2], all[i])
  elseif all[i] == host then
    carry = tonumber(c) or 0
  else
    total = total + w
  end
end

local share = want
if total > tokens and total > 0 then
  share = tokens * want / total + carry
end
local grant = math.floor(share)
if grant > tokens then
  grant = math.floor(tokens)
end
if grant > want then
  grant = want
end
carry = math.max(0, math.min(1, share - grant))
if share == want then
  carry = 0
end
tokens = tokens - grant
redis.call('HSET', KEYS[2], host, want .. ':' .. now .. ':' .. tostring(carry))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
-- A tenant idle for a day starts empty again; its demand goes with it.
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
return {grant, math.floor(tokens), now}
