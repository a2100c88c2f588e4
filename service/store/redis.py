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


# ARGV: prefix, dedup ttl, attribution ttl, stream shard, then two blocks of one line per click:
#   control: fixed-width kind ('v' for a dedup candidate, else '-'), click id (28 characters), time
#     in ms (13 digits) and device hash (32), then reason, code and seller separated by tabs;
#   rows: the clicks' rows in COPY text format, written as if none were a repeat.
# Per click: the dedup mark (SET NX holding the first click id) and the attribution record;
# per batch: one stream entry {n: clicks, c: the rows block untouched, d: repeats as
# "<line number>:<first click id>" joined by commas, when there are any} and the backlog count.
# The script never copies a row, and fixed widths spare it pattern matching: its cost per click
# is the two Redis commands. Returns the repeats as a flat list: line number, first click id, ...
LOG_SCRIPT = """
local prefix, dedup_ttl, attr_ttl, shard = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local control, sub, find = ARGV[5], string.sub, string.find
local repeats, marks, buckets = {}, {}, {}
local pos, n, size = 1, 0, #control
while pos <= size do
  local eol = find(control, '\\n', pos, true) or size + 1
  local tab1 = find(control, '\\t', pos + 74, true)
  local tab2 = find(control, '\\t', tab1 + 1, true)
  local cid, ts = sub(control, pos + 1, pos + 28), sub(control, pos + 29, pos + 41)
  local code, seller = sub(control, tab1 + 1, tab2 - 1), sub(control, tab2 + 1, eol - 1)
  local first = false
  n = n + 1
  if string.byte(control, pos) == 118 then
    local dkey = prefix .. 'dd:' .. code .. ':' .. sub(control, pos + 42, pos + 73)
    if not redis.call('SET', dkey, cid, 'NX', 'EX', dedup_ttl) then
      first = redis.call('GET', dkey)
      if not first then redis.call('SET', dkey, cid, 'EX', dedup_ttl) end
    end
  end
  local akey = prefix .. 'ck:' .. math.floor(tonumber(ts) / 60000)
  if first then
    redis.call('HSET', akey, cid, ts .. '|ERR_DUP|' .. first .. '|' .. code .. '|' .. seller)
    repeats[#repeats + 1] = n
    repeats[#repeats + 1] = first
    marks[#marks + 1] = n .. ':' .. first
  else
    redis.call('HSET', akey, cid, ts .. '|' .. sub(control, pos + 74, tab1 - 1) .. '||' .. code .. '|' .. seller)
  end
  buckets[akey] = true
  pos = eol + 1
end
for akey in pairs(buckets) do redis.call('EXPIRE', akey, attr_ttl + 60) end
local stream = prefix .. '{s' .. shard .. '}:clicks'
if #marks > 0 then
  redis.call('XADD', stream, '*', 'n', n, 'c', ARGV[6], 'd', table.concat(marks, ','))
else
  redis.call('XADD', stream, '*', 'n', n, 'c', ARGV[6])
end
redis.call('INCRBY', prefix .. 'backlog', n)
return repeats
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
