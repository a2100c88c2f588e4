"""What a redirect needs to know about a code, cached in the process for MCODE_CACHE_TTL_S.

A miss reads Postgres (one joined query) and leaves a copy in Redis, in the background: the
redirect does not wait for it. When Postgres cannot answer, the last copy this process had, or
else the Redis copy, is used: buyers keep being redirected through a database outage, on data
at most as old as the outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass

import asyncpg

from service import metrics
from service.codes import UTM_FIELDS
from service.outages import Outage
from service.store import redis as keys
from service.urls import HostPolicy, host_of, landing_parts

log = logging.getLogger("mcode.records")

POSTGRES_TIMEOUT_S = 0.5
# The Redis copy is a fallback: a Redis that hangs must not hold a redirect for long.
REDIS_TIMEOUT_S = 0.5
REDIS_COPY_TTL_S = 7 * 24 * 3600
# A code that does not exist is remembered too, so a flood of one unknown (but well-signed)
# code does not become a flood of queries.
_MISSING = "-"

RECORD_SQL = f"""
SELECT c.code, c.seller_id, c.product_id, c.active, c.channel, {", ".join("c." + f for f in UTM_FIELDS)},
       p.url, p.status = 'listed' AND p.stock > 0 AS sellable,
       s.status = 'active' AND s.verified AND s.affiliate_enabled AS seller_ok
FROM codes c JOIN products p USING (product_id) JOIN sellers s ON s.seller_id = c.seller_id
WHERE c.code = $1
"""


@dataclass(frozen=True, slots=True)
class CodeRecord:
    code: str
    seller_id: str
    product_id: str
    active: bool
    seller_ok: bool
    sellable: bool
    url: str
    head: str  # the landing URL up to `mc_click=`
    fragment: str


def _record(row: dict[str, object]) -> CodeRecord:
    url = str(row["url"])
    head, fragment = landing_parts(url, {k: row[k] for k in UTM_FIELDS})  # type: ignore[misc]
    return CodeRecord(
        code=str(row["code"]), seller_id=str(row["seller_id"]), product_id=str(row["product_id"]),
        active=bool(row["active"]), seller_ok=bool(row["seller_ok"]), sellable=bool(row["sellable"]),
        url=url, head=head, fragment=fragment,
    )


class Records:
    def __init__(self, pool: asyncpg.Pool, redis: keys.Client, prefix: str, ttl_s: float,
                 hosts: HostPolicy) -> None:
        self.pool = pool
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.hosts = hosts
        self.cache: dict[str, tuple[float, CodeRecord | None, bool]] = {}
        self.loading: dict[str, asyncio.Future[CodeRecord | None]] = {}
        self.copying: set[asyncio.Task[None]] = set()
        self.outage = Outage("postgres", "redirects (records from memory or Redis meanwhile)", log)

    async def get(self, code: str) -> tuple[CodeRecord | None, bool]:
        """(record or None when the code does not exist, whether its host is still allowed)."""
        entry = self.cache.get(code)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1], entry[2]
        # Concurrent misses for one code share one query.
        pending = self.loading.get(code)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self.loading[code] = pending
            try:
                record = await self._load(code, entry[1] if entry else None)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # seen: no "never retrieved" warning when nobody else waited
                raise
            finally:
                del self.loading[code]
            pending.set_result(record)
        else:
            record = await pending
        allowed = record is not None and self.hosts.allows(host_of(record.url))
        self.cache[code] = (time.monotonic() + self.ttl_s, record, allowed)
        if len(self.cache) > 100_000:
            self._evict()
        return record, allowed

    async def _load(self, code: str, stale: CodeRecord | None) -> CodeRecord | None:
        try:
            async with asyncio.timeout(POSTGRES_TIMEOUT_S), self.pool.acquire() as conn:
                row = await conn.fetchrow(RECORD_SQL, code)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self.outage.failed(exc)
            return stale or await self._from_redis(code)
        self.outage.ok()
        record = _record(dict(row)) if row else None
        # Kept in Redis beside the redirect, not before it: the buyer never waits on the copy.
        task = asyncio.get_running_loop().create_task(self._to_redis(code, record))
        self.copying.add(task)
        task.add_done_callback(self.copying.discard)
        return record

    def _key(self, code: str) -> str:
        return f"{self.prefix}rec:{code}"

    async def _to_redis(self, code: str, record: CodeRecord | None) -> None:
        try:
            value = json.dumps(asdict(record)) if record else _MISSING
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await self.redis.set(self._key(code), value, ex=REDIS_COPY_TTL_S)
        except Exception as exc:  # the copy is a convenience; its absence must not cost a redirect
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            log.debug("could not keep a copy of %s in redis: %r", code, exc)

    async def _from_redis(self, code: str) -> CodeRecord | None:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                value = await self.redis.get(self._key(code))
        except Exception:
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            value = None
        if value is None:
            raise LookupError(f"neither postgres nor redis can resolve {code}")
        if value in (_MISSING, _MISSING.encode()):
            return None
        return CodeRecord(**json.loads(value))

    def _evict(self) -> None:
        now = time.monotonic()
        for code in [c for c, (expires, _, _) in self.cache.items() if expires <= now]:
            del self.cache[code]
