"""Redis keys, their lifetimes, and the scripts that touch them.

Every key starts with MCODE_REDIS_PREFIX. The click log is split in shards (MCODE_CLICK_STREAMS):
a shard's keys share one hash tag, so each lives in one Redis Cluster slot, and every script call
touches the keys of one shard only. A click's shard follows from its code and device (so its
repeats meet its dedup mark), and is written into its click id (so an order finds the click's
attribution record from the id alone).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from service.store import resp

# redis-py's client for everything off the buyer's path: one node, or a Redis Cluster.
Client = aioredis.Redis | RedisCluster

# The consumer group every writer joins: together they are one reader of the click log.
WRITER_GROUP = "writers"
# A click id ends in 3 hex digits naming its shard.
MAX_SHARDS = 1024


@functools.lru_cache(maxsize=8)
def shard_tags(count: int) -> tuple[str, ...]:
    """One hash tag per shard, chosen so that shard i's slot lies in the i-th of `count` equal
    ranges of the 16384 slots: a cluster whose masters own equal ranges (as `redis-cli --cluster
    create` makes them) gets an equal share of the shards, instead of whatever CRC16 gives."""
    tags = []
    for shard in range(count):
        low, high = shard * REDIS_CLUSTER_HASH_SLOTS // count, (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        n = 0
        while not low <= key_slot(f"s{shard}.{n}".encode()) < high:
            n += 1
        tags.append(f"s{shard}.{n}")
    return tuple(tags)


class Shards:
    """The keys of each click shard. On one Redis node (`cluster` False) slots do not matter, and
    a batch is cheaper as one stream entry than as a part per shard: the shards then share one
    epoch, one doubt span and one attribution hash per second (the layout of the release before
    shards), and keep only their streams and backlogs."""

    def __init__(self, prefix: str, count: int, cluster: bool = False) -> None:
        self.prefix = prefix
        self.count = count
        self.cluster = cluster
        self.tags = shard_tags(count)
        self.slots = [key_slot(tag.encode()) for tag in self.tags]
        self.streams = [self.key(shard, "clicks") for shard in range(count)]

    def key(self, shard: int, name: str) -> str:
        return f"{self.prefix}{{{self.tags[shard]}}}:{name}"

    def of_device(self, code: str, device_hash: str) -> int:
        """The shard of a click: the same for every click of a device on a code."""
        return zlib.crc32(f"{device_hash}{code}".encode()) % self.count

    def of_click(self, click_id: str) -> int | None:
        """The shard a click id names (None for ids of releases before shards, or of more shards)."""
        shard = int(click_id[-3:], 16)
        return shard if shard < self.count else None

    def of_stream(self, stream: bytes | str) -> int | None:
        """The shard of a stream; None for a stream of the release before shards."""
        name = stream.decode() if isinstance(stream, bytes) else stream
        return self.streams.index(name) if name in self.streams else None

    @property
    def legacy_streams(self) -> list[str]:
        """Where the release before shards put clicks (one Redis node only): four streams with one
        backlog and one doubt span. Writers drain them too, so that clicks the old web processes
        answered during a rolling deploy are stored; once they are empty this can go."""
        return [f"{self.prefix}{{s{n}}}:clicks" for n in range(4)]

    def backlog(self, shard: int | None) -> str:
        """Clicks answered but not yet committed: the log script adds, the ack script subtracts."""
        return self.key(shard, "backlog") if shard is not None else f"{self.prefix}backlog"

    def places(self) -> list[int]:
        """A shard for each epoch and doubt span: every shard on a cluster, any one on one node."""
        return list(range(self.count)) if self.cluster else [0]

    def epoch(self, shard: int | None) -> str:
        """A token set once per life of the shard's Redis data: when a click log finds it changed
        or gone, that Redis has lost what it held (a restart without persistence, a flush), and
        the clicks it took in the last seconds are sent again."""
        return self.key(shard, "epoch") if self.cluster and shard is not None else f"{self.prefix}epoch"

    def doubt(self, shard: int | None) -> str:
        """`<from ms>:<until ms>`: the shard's clicks stamped in this span are judged again in
        Postgres by the writers (their Redis verdicts may miss a first click Redis lost or never
        saw). Set when Redis is found without its epoch, and by a click log coming back from a
        Redis outage. (None: the one span of the release before shards.)"""
        return self.key(shard, "doubt") if self.cluster and shard is not None else f"{self.prefix}doubt"

    def dedup(self, shard: int, code: str, device_hash: str) -> str:
        """The first valid click id of a device on a code; expires with the dedup window."""
        return self.key(shard, f"dd:{code}:{device_hash}")

    def attribution_bucket(self, shard: int, second: int) -> str:
        """The hash of one second of a shard's clicks: field = click id, value = attribution_value(...).
        A hash per second costs far less than a key per click."""
        return self.key(shard, f"cs:{second}") if self.cluster else f"{self.prefix}cs:{second}"

    def attribution_key(self, click_id: str) -> str | None:
        shard = self.of_click(click_id)
        if shard is None and self.cluster:
            return None
        return self.attribution_bucket(shard or 0, int(click_id[:12], 16) // ATTRIBUTION_BUCKET_MS)


async def client(urls: str, **options: Any) -> Client:
    """redis-py's client for MCODE_REDIS_URL (one URL, or several nodes of a cluster separated by
    commas): a cluster client when the first node that answers is in cluster mode. When none
    answers, it cannot be asked: several URLs are taken for a cluster's nodes, one for one node
    (the client connects when Redis is back; `mcode serve` waits for Redis before it starts)."""
    try:
        found = await resp.detect(resp.split_urls(urls))
    except ConnectionError:
        return client_for(urls, cluster=len(resp.split_urls(urls)) > 1, **options)
    await found.close()
    cluster = isinstance(found, resp.Cluster)
    return client_for(",".join(found.urls) if isinstance(found, resp.Cluster) else found.url, cluster, **options)


def client_for(urls: str, cluster: bool, **options: Any) -> Client:
    nodes = resp.split_urls(urls)
    if not cluster:
        return aioredis.Redis.from_url(nodes[0], **options)
    settings: dict[str, Any] = {k: v for k, v in parse_url(nodes[0]).items() if k not in ("host", "port", "db", "path")}
    if settings.pop("connection_class", None) is SSLConnection:
        settings["ssl"] = True
    startup = [ClusterNode(*resp.address(node)) for node in nodes]
    return RedisCluster(startup_nodes=startup, **settings, **options)


async def doubt(redis: Any, shards: Shards, shard: int | None) -> tuple[int, int] | None:
    value = await redis.get(shards.doubt(shard))
    if value is None:
        return None
    start, _, end = (value.decode() if isinstance(value, bytes) else str(value)).partition(":")
    return (int(start), int(end)) if start.isdigit() and end.isdigit() else None


async def backlog(redis: Any, shards: Shards) -> int:
    """The clicks in every shard's stream not yet committed (one GET per shard: on a cluster
    they live on different nodes)."""
    names = [shards.backlog(s) for s in range(shards.count)]
    if isinstance(redis, RedisCluster):
        values: Sequence[Any] = await redis.mget_nonatomic(names)
    else:  # with the backlog of the release before shards, whose streams the writers still drain
        values = await redis.mget([*names, shards.backlog(None)])
    return sum(int(v) for v in values if v is not None)


# One hash of attribution records per second of clicks. (Per minute, as before 2026-11-27, a
# busy minute's hash held over a million fields, and each HSET into it cost ~4x more.)
ATTRIBUTION_BUCKET_MS = 1000


def attribution_value(at_ms: int, reason: str, first: str, code: str, seller: str | None) -> str:
    """`<time ms, 13 digits>|<reason>|<first click id>|<code>|<seller>`: reason '' is valid; the
    first click id is set for ERR_DUP (LOG_SCRIPT turns a valid one into that)."""
    return f"{at_ms:013d}|{reason}|{first}|{code}|{seller or ''}"


def rejects_key(prefix: str) -> str:
    """Stream entries the writer could not store (corrupt, or refused by Postgres): kept, not retried."""
    return f"{prefix}clicks:rejected"


# How far back a span opened by a lost epoch reaches: the clicks the click logs send again.
LOST_EPOCH_BACK_MS = 120_000
# Widens a doubt span (see Shards.doubt) to cover [from, until]: an active span grows, an old
# one is replaced. Lua's %d would overflow on millisecond times, hence %.0f.
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

-- The epoch of a shard's Redis data (made when missing: Redis is new, or lost its data, and then
-- for a dedup window writers judge every click of the shard again in Postgres).
local function ensure_epoch(epoch_key, doubt_key, window_ms)
  local epoch = redis.call('GET', epoch_key)
  if epoch then
    return epoch, false
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  epoch = string.format('%.0f', now)
  redis.call('SET', epoch_key, epoch)
  widen_doubt(doubt_key, now - LOST_EPOCH_BACK_MS, now + window_ms)
  return epoch, true
end
""".replace("LOST_EPOCH_BACK_MS", str(LOST_EPOCH_BACK_MS))

# KEYS: a shard's epoch and doubt keys. ARGV: dedup window ms, then optionally from ms and until
# ms of a span to doubt. Returns the epoch.
EPOCH_SCRIPT = _WIDEN_DOUBT + """
local epoch = ensure_epoch(KEYS[1], KEYS[2], tonumber(ARGV[1]))
if ARGV[2] then
  widen_doubt(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
end
return epoch
"""

# The click log's call: one per batch on one Redis node, one per shard of the batch on Redis
# Cluster (its keys share the shard's slot). It takes several parts, though the click log sends one.
# ARGV: 1 dedup ttl, 2 attribution ttl, 3 number of parts; then per part: its rows in COPY text
#   format, written as if no click were a repeat; their number n; n flags ('d': a dedup
#   candidate, '-': not); the shard's epoch as the caller last saw it ('' if never); the number
#   g of runs of clicks in the same attribution bucket (a second); the g run lengths; then per
#   click: click id and attribution value (a candidate's as valid).
# KEYS per part: stream, backlog, epoch, doubt, the g attribution keys, the candidates' dedup keys.
# Per candidate: the dedup mark (SET NX holding the first click id); a repeat (a mark holding an
# earlier click's id; ids begin with their time, so they compare as times) has its attribution
# value turned into ERR_DUP pointing at the first click. Then per run one HSET of its records,
# and per part one stream entry {n, c: the rows untouched, d: repeats as "<line>:<first click
# id>" joined by commas, when there are any} and the backlog count. The client lays out every key
# and value, so the script builds no string but a repeat's.
# Returns a flat list of pairs: for each repeat its line (counted over the whole call) and first
# click id; for each part whose shard's epoch is not the one the caller saw (Redis lost its data
# since, whoever noticed first), minus the part's number and 'epoch'.
LOG_SCRIPT = _WIDEN_DOUBT + """
local dedup_ttl, attribution_ttl = ARGV[1], ARGV[2]
local window_ms = tonumber(dedup_ttl) * 1000
local out = {}
local a, k, before = 4, 1, 0
for part = 1, tonumber(ARGV[3]) do
  local rows, n, flags, seen, runs = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  local stream, backlog, doubt = KEYS[k], KEYS[k + 1], KEYS[k + 3]
  local epoch, new_epoch = ensure_epoch(KEYS[k + 2], doubt, window_ms)
  local lengths, records, attribution_keys = a + 5, a + 5 + runs, k + 4
  local dedup_key = attribution_keys + runs
  local marks = {}
  for line = 1, n do
    if string.byte(flags, line) == 100 then  -- 'd'
      local dkey, at = KEYS[dedup_key], records + 2 * (line - 1)
      dedup_key = dedup_key + 1
      if not redis.call('SET', dkey, ARGV[at], 'NX', 'EX', dedup_ttl) then
        -- the key exists (no key expires while a script runs): this click is a repeat, unless the
        -- mark is its own (a call that timed out but ran, then the same click again from the spool)
        local first = redis.call('GET', dkey)
        if first > ARGV[at] then
          -- the mark is a later click's (this one comes late: from a spool, sent again, or merely
          -- overtaken by its repeat on another worker): this is the first click. Both were answered
          -- as valid, so the writers judge the span between them again and make the later the repeat.
          redis.call('SET', dkey, ARGV[at], 'XX', 'KEEPTTL')
          widen_doubt(doubt, tonumber(string.sub(ARGV[at], 1, 12), 16) - 1000,
                      tonumber(string.sub(first, 1, 12), 16) + window_ms)
        elseif first ~= ARGV[at] then
          local value = ARGV[at + 1]
          ARGV[at + 1] = string.sub(value, 1, 14) .. 'ERR_DUP|' .. first .. string.sub(value, 16)
          out[#out + 1] = before + line
          out[#out + 1] = first
          marks[#marks + 1] = line .. ':' .. first
        end
      end
    end
  end
  local at = records
  for run = 0, runs - 1 do
    local akey, length = KEYS[attribution_keys + run], tonumber(ARGV[lengths + run])
    redis.call('HSET', akey, unpack(ARGV, at, at + 2 * length - 1))
    redis.call('EXPIRE', akey, attribution_ttl)
    at = at + 2 * length
  end
  if #marks > 0 then
    redis.call('XADD', stream, '*', 'n', n, 'c', rows, 'd', table.concat(marks, ','))
  else
    redis.call('XADD', stream, '*', 'n', n, 'c', rows)
  end
  redis.call('INCRBY', backlog, n)
  if new_epoch or (seen ~= '' and seen ~= epoch) then
    -- the shard's Redis had lost its data (or is new): the caller sends its recent clicks again
    out[#out + 1] = -part
    out[#out + 1] = 'epoch'
  end
  a, k, before = at, dedup_key, before + n
end
return out
"""

# KEYS: stream, its backlog. ARGV: consumer group, then pairs of (entry id, clicks in it).
# Acknowledges the entries and deletes them; only an entry this call really deleted is taken off
# the backlog, so a batch committed twice (a writer that died before acknowledging) is not
# subtracted twice.
ACK_SCRIPT = """
local stream, backlog, group = KEYS[1], KEYS[2], ARGV[1]
for i = 2, #ARGV, 2 do
  redis.call('XACK', stream, group, ARGV[i])
  if redis.call('XDEL', stream, ARGV[i]) == 1 then
    redis.call('DECRBY', backlog, ARGV[i + 1])
  end
end
return 1
"""
