"""Redis keys, their lifetimes, and the scripts that touch them.

Every key starts with MCODE_REDIS_PREFIX. Keys of one click share a hash tag ({shard}) so a
Redis Cluster keeps a click's stream entry, dedup mark and attribution record in one slot.
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
