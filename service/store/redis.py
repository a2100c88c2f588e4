"""Redis keys, their lifetimes, and the scripts that touch them.

Every key starts with MCODE_REDIS_PREFIX. The click log script touches the keys of every click
of a batch in one call, which a single Redis node allows; on Redis Cluster a batch would have
to be split per slot first, which is not built yet.
"""

from __future__ import annotations

import redis.asyncio as aioredis

# The click log is spread over several streams, each batch to the next in turn, so that several
# writers read it in parallel (a hash tag per stream would let them live on different Redis Cluster
# nodes, which the log script does not support yet).
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


def epoch_key(prefix: str) -> str:
    """A token set once per life of the Redis data: when a click log finds it changed or gone,
    Redis has lost what it held (a restart without persistence, a flush, a failover to a replica
    that lagged), and the clicks it took in the last seconds are sent again."""
    return f"{prefix}epoch"


def doubt_key(prefix: str) -> str:
    """`<from ms>:<until ms>`: clicks stamped in this span are judged again in Postgres by the
    writers (their Redis verdicts may miss a first click Redis lost or never saw). Set when
    Redis is found without its epoch, and by a click log coming back from a Redis outage."""
    return f"{prefix}doubt"


async def doubt(redis: aioredis.Redis, prefix: str) -> tuple[int, int] | None:
    value = await redis.get(doubt_key(prefix))
    if value is None:
        return None
    start, _, end = (value.decode() if isinstance(value, bytes) else str(value)).partition(":")
    return (int(start), int(end)) if start.isdigit() and end.isdigit() else None


async def backlog(redis: aioredis.Redis, prefix: str) -> int:
    value = await redis.get(backlog_key(prefix))
    return int(value or 0)


# One hash of attribution records per second of clicks. (Per minute, as before 2026-11-27, a
# busy minute's hash held over a million fields, and each HSET into it cost ~4x more.)
ATTRIBUTION_BUCKET_MS = 1000


def attribution_key(prefix: str, click_id: str) -> str:
    """The hash of the second of the click (read from its id), field = click id, value =
    attribution_value(...). A hash per second costs far less than a key per click."""
    return attribution_bucket(prefix, int(click_id[:12], 16) // ATTRIBUTION_BUCKET_MS)


def attribution_bucket(prefix: str, second: int) -> str:
    return f"{prefix}cs:{second}"


def legacy_attribution_key(prefix: str, click_id: str) -> str:
    """Where releases before 2026-11-27 kept the record: a hash per minute. Read as a fallback so
    that orders on clicks an old worker answered during a rolling deploy are still found; once
    ATTRIBUTION window + slack (40 minutes by default) has passed after the deploy, none is left."""
    return f"{prefix}ck:{int(click_id[:12], 16) // 60_000}"


def attribution_value(at_ms: int, reason: str, first: str, code: str, seller: str | None) -> str:
    """`<time ms, 13 digits>|<reason>|<first click id>|<code>|<seller>`: reason '' is valid; the
    first click id is set for ERR_DUP (LOG_SCRIPT turns a valid one into that)."""
    return f"{at_ms:013d}|{reason}|{first}|{code}|{seller or ''}"


def dedup_key(prefix: str, code: str, device_hash: str) -> str:
    """The first valid click id of a device on a code; expires with the dedup window."""
    return f"{prefix}dd:{code}:{device_hash}"


def rejects_key(prefix: str) -> str:
    """Stream entries the writer could not store (corrupt, or refused by Postgres): kept, not retried."""
    return f"{prefix}clicks:rejected"


# The click log's one call per batch. ARGV:
#   1 dedup ttl, 2 attribution ttl, 3 stream key, 4 backlog key,
#   5 the batch's rows in COPY text format, written as if no click were a repeat, 6 their number n,
#   7 the number g of runs of clicks in the same attribution bucket (a second; in line order);
#   then per run: its attribution key and length;
#   then per click, in line order: click id and attribution value (a dedup candidate's as valid);
#   then per click: its dedup key, or '' when it is not a candidate (a click judged valid).
# Per candidate: the dedup mark (SET NX holding the first click id); a repeat (a mark holding
# an earlier click's id; ids begin with their time, so they compare as times) has its attribution
# value turned into ERR_DUP pointing at the first click. Then per run one HSET of its records,
# and per batch one stream entry {n, c: the rows untouched, d: repeats as "<line>:<first click
# id>" joined by commas, when there are any} and the backlog count. The client lays out every key
# and value, so the script builds no string but a repeat's: its cost per click is the SET and a
# share of the HSET. Returns the repeats as a flat list: line number, first click id, ...
# How far back a span opened by a lost epoch reaches: the clicks the click logs send again.
LOST_EPOCH_BACK_MS = 120_000
# Widens the doubt span (see doubt_key) to cover [from, until]: an active span grows, an old one
# is replaced. Lua's %d would overflow on millisecond times, hence %.0f.
_WIDEN_DOUBT = """
local function widen_doubt(key, from, till)
  local old = redis.call('GET', key)
  if old then
    local f, u = string.match(old, '^(%d+):(%d+)$')
    if f and tonumber(u) >= from then
      from, till = math.min(from, tonumber(f)), math.max(till, tonumber(u))
    end
  end
  redis.call('SET', key, string.format('%.0f:%.0f', from, till))
end

-- The epoch of Redis's data (made when missing: Redis is new, or lost its data, and then for a
-- dedup window writers judge every click again in Postgres).
local function ensure_epoch(prefix, window_ms)
  local epoch = redis.call('GET', prefix .. 'epoch')
  if epoch then
    return epoch, false
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  epoch = string.format('%.0f', now)
  redis.call('SET', prefix .. 'epoch', epoch)
  widen_doubt(prefix .. 'doubt', now - LOST_EPOCH_BACK_MS, now + window_ms)
  return epoch, true
end
""".replace("LOST_EPOCH_BACK_MS", str(LOST_EPOCH_BACK_MS))

# ARGV: prefix, dedup window ms, then optionally from ms and until ms of a span to doubt.
# Returns the epoch.
EPOCH_SCRIPT = _WIDEN_DOUBT + """
local epoch = ensure_epoch(ARGV[1], tonumber(ARGV[2]))
if ARGV[3] then
  widen_doubt(ARGV[1] .. 'doubt', tonumber(ARGV[3]), tonumber(ARGV[4]))
end
return epoch
"""

LOG_SCRIPT = _WIDEN_DOUBT + """
local n, runs = tonumber(ARGV[6]), tonumber(ARGV[7])
local _, new_epoch = ensure_epoch(string.sub(ARGV[4], 1, -8), tonumber(ARGV[1]) * 1000)  -- ARGV[4]: <prefix>backlog
local records = 8 + 2 * runs
local dedup_keys = records + 2 * n
local repeats, marks = {}, {}
for line = 1, n do
  local dkey = ARGV[dedup_keys + line - 1]
  if dkey ~= '' then
    local at = records + 2 * (line - 1)
    if not redis.call('SET', dkey, ARGV[at], 'NX', 'EX', ARGV[1]) then
      -- the key exists (no key expires while a script runs): this click is a repeat, unless the
      -- mark is its own (a call that timed out but ran, then the same click again from the spool)
      local first = redis.call('GET', dkey)
      if first > ARGV[at] then
        -- the mark is a later click's (this one comes late: from a spool, sent again, or merely
        -- overtaken by its repeat on another worker): this is the first click. Both were answered
        -- as valid, so the writers judge the span between them again and make the later the repeat.
        redis.call('SET', dkey, ARGV[at], 'XX', 'KEEPTTL')
        widen_doubt(string.sub(ARGV[4], 1, -8) .. 'doubt', tonumber(string.sub(ARGV[at], 1, 12), 16) - 1000,
                    tonumber(string.sub(first, 1, 12), 16) + tonumber(ARGV[1]) * 1000)
      elseif first ~= ARGV[at] then
        local value = ARGV[at + 1]
        ARGV[at + 1] = string.sub(value, 1, 14) .. 'ERR_DUP|' .. first .. string.sub(value, 16)
        repeats[#repeats + 1] = line
        repeats[#repeats + 1] = first
        marks[#marks + 1] = line .. ':' .. first
      end
    end
  end
end
local at = records
for run = 0, runs - 1 do
  local akey, k = ARGV[8 + 2 * run], tonumber(ARGV[9 + 2 * run])
  redis.call('HSET', akey, unpack(ARGV, at, at + 2 * k - 1))
  redis.call('EXPIRE', akey, ARGV[2])
  at = at + 2 * k
end
if #marks > 0 then
  redis.call('XADD', ARGV[3], '*', 'n', n, 'c', ARGV[5], 'd', table.concat(marks, ','))
else
  redis.call('XADD', ARGV[3], '*', 'n', n, 'c', ARGV[5])
end
redis.call('INCRBY', ARGV[4], n)
if new_epoch then
  -- line 0: Redis had lost its data (or is new): the caller sends its recent clicks again
  repeats[#repeats + 1] = 0
  repeats[#repeats + 1] = 'epoch'
end
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
