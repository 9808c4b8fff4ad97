"""The Lua scripts of the Redis State adapter's one-round-trip writes (plain Redis only).

Both keep the layout of ``pyiii.stores.redis`` exactly (the hash value
``<version>:<ord>:[e<expires_at>:]<json>``, the ``keys`` and ``ttl`` indexes,
the scope counter, ``<p>:ttl-scopes``, the msgpack change event on the
scope's channel): a script runs atomically, so it replaces WATCH/MULTI/EXEC
and the reads before it.

``SETS`` runs a batch of plain sets and deletes of one scope, each behind
an optional ``expect_version``/``expect_exists`` precondition, in order:
read the field, check, take the next version (``INCRBY``), write the value
and both indexes, hint ``ttl-scopes``, publish the event(s). It reads its
own input and needs nothing read beforehand: one round trip per batch.

``APPLY`` is the general compare-and-run for writes whose new value depends
on the old one (update ops, transactions): the caller read the fields and
the counters (one pipelined round trip), computed the writes in Python, and
sends the expected stored values with the commands; the script runs the
commands only if every expected value still holds (else returns 0 and the
caller reads again). Stored values carry a version that changes on every
write, so "the same bytes" means "untouched since read".
"""

from __future__ import annotations

import hashlib

from pyiii.stores.events import CREATED, DELETED, EXPIRED, UPDATED


def _lua_bytes(data: bytes) -> str:
    return "'" + "".join(f"\\{b}" for b in data) + "'"


# KEYS: kv, counter, keys index, ttl index, ttl-scopes
# ARGV: channel, scope, tag, now, then per write: field, mode (s|d), raw,
#       expires_at or '', expect_version or '', expect_exists ('' | 1 | 0)
# Reply per write: status (1 written, 2 nothing to do, 0 precondition
# failed, -1 unparseable stored value), the stored value before (or false),
# the new version (or 0).
SETS = (
    """
local function bin(s)
  if not s then return '\\192' end
  local n = #s
  if n < 256 then return '\\196' .. string.char(n) .. s end
  if n < 65536 then return '\\197' .. string.char(math.floor(n / 256), n % 256) .. s end
  return '\\198' .. string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. s
end
local kv, counter, index, ttl, hints = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, scope, tag, now = ARGV[1], bin(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 6 do
  local field, mode, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local exp, ev, ee = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local cur = redis.call('HGET', kv, field)
  local cver, cord, cexp, craw
  local ok = true
  if cur then
    local a = string.find(cur, ':', 1, true)
    local b = a and string.find(cur, ':', a + 1, true)
    if not b then ok = false else
      cver, cord, craw = string.sub(cur, 1, a - 1), string.sub(cur, a + 1, b - 1), string.sub(cur, b + 1)
      if string.sub(craw, 1, 1) == 'e' then
        local c = string.find(craw, ':', 2, true)
        if not c then ok = false else
          cexp = string.sub(craw, 2, c - 1)
          craw = string.sub(craw, c + 1)
        end
      end
      if not tonumber(cver) or not tonumber(cord) or (cexp and not tonumber(cexp)) then ok = false end
    end
  end
  local status = 1
  local version = 0
  local live = cur and (not cexp or tonumber(cexp) > now)
  if not ok then
    status = -1
  elseif (ee == '1' and not live) or (ee == '0' and live) or (ev ~= '' and (not live or cver ~= ev)) then
    status = 0
  elseif mode == 'd' and not live then
    status = 2
  else
    local fkey = bin(field)
    if cur and not live then
      redis.call('PUBLISH', channel, '\\149' .. bin(EXPIRED) .. scope .. fkey .. bin(craw) .. '\\192')
    end
    if mode == 'd' then
      redis.call('HDEL', kv, field)
      redis.call('ZREM', index, field)
      if cexp then redis.call('ZREM', ttl, field) end
      redis.call('PUBLISH', channel, '\\149' .. bin(DELETED) .. scope .. fkey .. bin(craw) .. '\\192')
    else
      version = redis.call('INCRBY', counter, 1)
      local v = string.format('%d', version)
      local ord = v
      if live then ord = cord end
      if exp ~= '' then
        redis.call('HSET', kv, field, v .. ':' .. ord .. ':e' .. exp .. ':' .. raw)
      else
        redis.call('HSET', kv, field, v .. ':' .. ord .. ':' .. raw)
      end
      if not cur then redis.call('ZADD', index, 0, field) end
      if exp ~= '' then
        redis.call('ZADD', ttl, exp, field)
        redis.call('ZADD', hints, 'LT', exp, tag)
      elseif cexp then
        redis.call('ZREM', ttl, field)
      end
      if live then
        redis.call('PUBLISH', channel, '\\149' .. bin(UPDATED) .. scope .. fkey .. bin(craw) .. bin(raw))
      else
        redis.call('PUBLISH', channel, '\\149' .. bin(CREATED) .. scope .. fkey .. '\\192' .. bin(raw))
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = cur or false
  out[#out + 1] = version
end
return out
""".replace("EXPIRED", _lua_bytes(EXPIRED))
    .replace("DELETED", _lua_bytes(DELETED))
    .replace("UPDATED", _lua_bytes(UPDATED))
    .replace("CREATED", _lua_bytes(CREATED))
)

# KEYS: every key the commands touch (declared; the commands name them too)
# ARGV: number of checks, then per check: h <hash> <field> <expected> or
#       k <key> <expected> ('' expects it absent); number of commands, then
#       per command: argc, name, args...
# Reply: 1 when the commands ran, 0 when a check failed (nothing ran).
APPLY = """
local i = 1
local checks = tonumber(ARGV[i]); i = i + 1
for _ = 1, checks do
  local got
  if ARGV[i] == 'h' then
    got = redis.call('HGET', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  else
    got = redis.call('GET', ARGV[i + 1]); i = i + 2
  end
  if (got or '') ~= ARGV[i] then return 0 end
  i = i + 1
end
local commands = tonumber(ARGV[i]); i = i + 1
for _ = 1, commands do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return 1
"""

SETS_SHA = hashlib.sha1(SETS.encode()).hexdigest()
APPLY_SHA = hashlib.sha1(APPLY.encode()).hexdigest()
