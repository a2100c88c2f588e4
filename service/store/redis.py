"""Redis keys, their lifetimes, and the scripts that touch them.

Every key starts with MCODE_REDIS_PREFIX. The click log script touches the keys of every
click in a batch, which a single Redis node allows; on Redis Cluster the batch would be split
per slot (hash tags on the stream shard), which is not built yet.
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


async def backlog(redis: aioredis.Redis, prefix: str) -> int:
    """Clicks answered but not yet committed to Postgres: the writer deletes what it commits."""
    total = 0
    for key in stream_keys(prefix):
        total += int(await redis.xlen(key))
    return total


def attribution_key(prefix: str, click_id: str) -> str:
    """`<time ms>|<reason>|<first click id>|<code>|<seller>` of a click, for order events
    (reason '' is valid; the first click id is set for ERR_DUP)."""
    return f"{prefix}ck:{click_id}"


def dedup_key(prefix: str, code: str, device_hash: str) -> str:
    """The first valid click id of a device on a code; expires with the dedup window."""
    return f"{prefix}dd:{code}:{device_hash}"


def rejects_key(prefix: str) -> str:
    """Stream entries the writer could not store (corrupt, or refused by Postgres): kept, not retried."""
    return f"{prefix}clicks:rejected"
