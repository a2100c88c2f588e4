"""Redis keys, their lifetimes, and the script that touches them.

Every key starts with MCODE_REDIS_PREFIX. The click log script builds the keys of every click
of a batch itself (LOG_SCRIPT mirrors the functions below), which a single Redis node allows;
on Redis Cluster a batch would have to be split per slot first, which is not built yet.
"""

from __future__ import annotations

import redis.asyncio as aioredis

# Several stream shards let several Redis Cluster nodes take the click log; with one node they
# cost nothing. A click goes to the shard chosen by its device id.
STREAM_SHARDS = 4
# The consumer group every writer joins: together they are one reader of the click log.
WRITER_GROUP = "writers"


def stream_key(prefix: str, shard: int) -> str:
    return f"{prefix}{{s{shard}}}:clicks"


def stream_keys(prefix: str) -> list[str]:
    return [stream_key(prefix, shard) for shard in range(STREAM_SHARDS)]


def backlog_key(prefix: str) -> str:
    """Clicks answered but not yet committed: the log script adds, the ack script subtracts."""
    return f"{prefix}backlog"


async def backlog(redis: aioredis.Redis, prefix: str) -> int:
    value = await redis.get(backlog_key(prefix))
    return int(value or 0)


ATTRIBUTION_BUCKET_MS = 60_000


def attribution_key(prefix: str, click_id: str) -> str:
    """A hash per minute of clicks (read from the click id's time), field = click id, value =
    `<time ms>|<reason>|<first click id>|<code>|<seller>` (reason '' is valid; the first click
    id is set for ERR_DUP). One hash per minute costs far less than a key per click."""
    return f"{prefix}ck:{int(click_id[:12], 16) // ATTRIBUTION_BUCKET_MS}"


def dedup_key(prefix: str, code: str, device_hash: str) -> str:
    """The first valid click id of a device on a code; expires with the dedup window."""
    return f"{prefix}dd:{code}:{device_hash}"


def rejects_key(prefix: str) -> str:
    """Stream entries the writer could not store (corrupt, or refused by Postgres): kept, not retried."""
    return f"{prefix}clicks:rejected"


# ARGV: prefix, dedup ttl, attribution ttl, stream shard, then one line per click, tab-separated:
#   kind ('v' for a dedup candidate, else '-'), click id, time ms, reason, code, seller,
#   device hash, and the click's row in COPY text format less its reason and original click id.
# Per click: the dedup mark (SET NX holding the first click id) and the attribution record;
# per batch: one stream entry {n: clicks, c: the complete rows, one a line} and the
# backlog count. Returns per click the first click's id for a repeat, else ''.
LOG_SCRIPT = """
local prefix, dedup_ttl, attr_ttl, shard = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local out, entry, buckets = {}, {}, {}
for line in string.gmatch(ARGV[5], '[^\\n]+') do
  local kind, cid, ts, reason, code, seller, device, row =
    string.match(line, '^(.-)\\t(.-)\\t(.-)\\t(.-)\\t(.-)\\t(.-)\\t(.-)\\t(.*)$')
  local first = false
  if kind == 'v' then
    local dkey = prefix .. 'dd:' .. code .. ':' .. device
    if not redis.call('SET', dkey, cid, 'NX', 'EX', dedup_ttl) then
      first = redis.call('GET', dkey)
      if not first then redis.call('SET', dkey, cid, 'EX', dedup_ttl) end
    end
  end
  local akey = prefix .. 'ck:' .. math.floor(tonumber(string.sub(cid, 1, 12), 16) / 60000)
  if first then
    redis.call('HSET', akey, cid, ts .. '|ERR_DUP|' .. first .. '|' .. code .. '|' .. seller)
  else
    redis.call('HSET', akey, cid, ts .. '|' .. reason .. '||' .. code .. '|' .. seller)
  end
  buckets[akey] = true
  out[#out + 1] = first or ''
  if first then
    entry[#entry + 1] = row .. '\\tERR_DUP\\t' .. first
  elseif reason == '' then
    entry[#entry + 1] = row .. '\\t\\\\N\\t\\\\N'
  else
    entry[#entry + 1] = row .. '\\t' .. reason .. '\\t\\\\N'
  end
end
for akey in pairs(buckets) do redis.call('EXPIRE', akey, attr_ttl + 60) end
redis.call('XADD', prefix .. '{s' .. shard .. '}:clicks', '*', 'n', #entry, 'c', table.concat(entry, '\\n'))
redis.call('INCRBY', prefix .. 'backlog', #entry)
return out
"""

# ARGV: prefix, stream, consumer group, then pairs of (entry id, clicks in it). Acknowledges the entries and
# deletes them; only an entry this call really deleted is taken off the backlog, so a batch
# committed twice (a writer that died before acknowledging) is not subtracted twice.
ACK_SCRIPT = """
local prefix, stream, group = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  redis.call('XACK', stream, group, ARGV[i])
  if redis.call('XDEL', stream, ARGV[i]) == 1 then
    redis.call('DECRBY', prefix .. 'backlog', ARGV[i + 1])
  end
end
return 1
"""
