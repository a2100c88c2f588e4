"""Which click an order or cart belongs to, and whether it counts.

The click is looked up in Postgres, the last word on which click is a repeat, then in Redis
(its attribution record is written in the same round trip as the redirect, so an order posted
the instant after is judged right).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.exceptions import RedisClusterException, RedisError

from service import metrics
from service.clicks import VALID, click_time
from service.errors import ApiError
from service.store import clicks as click_sql
from service.store import redis as keys

CLICK_ID_RE = re.compile(r"[0-9a-f]{28}")
# A click this young that is neither in Redis nor in Postgres may still be on its way (in a
# host's spool, or in a stream a writer has not reached): "no such click" would be final and
# could be wrong, so the order system is told to retry. Older than this, a click that was
# answered is in Postgres (reports promise 5 s), so its absence is the answer.
IN_FLIGHT = timedelta(minutes=5)
REDIS_TIMEOUT_S = 0.5
MAX_HOPS = 3
# Click ids are stamped by our own clocks; a little ahead of this process's is still ours.
AHEAD = timedelta(seconds=5)


@dataclass(frozen=True)
class ClickFacts:
    click_id: str
    at: datetime
    reason: str  # VALID or an ERR_ code
    first: str | None  # the first click's id, for ERR_DUP
    code: str
    seller_id: str | None


@dataclass(frozen=True)
class Verdict:
    attributed: bool
    reason: str | None  # ERR_NO_CLICK, ERR_INVALID_CLICK, ERR_WINDOW
    click: ClickFacts | None  # the click that counts (the first one, for a repeat)


class Clicks:
    """Clicks as attribution sees them. Postgres is read on the caller's connection: an event is
    judged inside its own transaction, and a second connection from the same pool per event
    could exhaust the pool while every holder waits for one more."""

    def __init__(self, redis: keys.Client, shards: keys.Shards, window_s: int, skew_s: int) -> None:
        self.redis = redis
        self.shards = shards
        self.prefix = shards.prefix
        self.window = timedelta(seconds=window_s)
        # An order system's clock may run behind ours, and whole-second stamps round an order
        # in the click's own second down to before it.
        self.skew = timedelta(seconds=skew_s)

    async def find(self, conn: asyncpg.Connection, click_id: str) -> ClickFacts | None:
        """Postgres first, as the last word on repeats (the writer judges them again there); a
        click not written yet is found in Redis, so an order right after its click is judged."""
        if not CLICK_ID_RE.fullmatch(click_id):
            return None
        try:
            at = click_time(click_id)
        except (ValueError, OverflowError):  # well formed, but no time we could have made
            return None
        row = await click_sql.find_click(conn, click_id, at)
        if row is not None:
            return ClickFacts(click_id, row["clicked_at"], row["reason"] or VALID, row["original_click_id"],
                              row["code"], row["seller_id"])
        try:
            # bounded: the event holds a pooled Postgres connection meanwhile
            place = self.shards.attribution_key(click_id)
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                found = [await self.redis.hget(place, click_id)] if place is not None else []
        except (RedisError, RedisClusterException, OSError, TimeoutError):
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            # The click may be answered but not yet in Postgres: saying "no click" could be wrong.
            raise ApiError("ERR_503", "clicks cannot be looked up right now; retry this event") from None
        value = next((v for v in found if v is not None), None)
        if value is not None:
            text = value.decode() if isinstance(value, bytes) else str(value)
            at_ms, reason, first, code, seller = text.split("|", 4)
            return ClickFacts(click_id, datetime.fromtimestamp(int(at_ms) / 1000, UTC), reason, first or None,
                              code, seller or None)
        if -AHEAD <= datetime.now(UTC) - at <= IN_FLIGHT:
            raise ApiError("ERR_503", "this click may still be on its way to the log; retry this event")
        return None

    async def judge(self, conn: asyncpg.Connection, click_id: str, occurred_at: datetime) -> Verdict:
        facts = await self.find(conn, click_id)
        if facts is None:
            return Verdict(False, "ERR_NO_CLICK", None)
        # A repeat counts for its first click. The first may itself have become a repeat since
        # (an earlier click arrived late, and the writer made it the first): follow it there.
        for _ in range(MAX_HOPS):
            if facts.reason != "ERR_DUP" or not facts.first:
                break
            first = await self.find(conn, facts.first)
            if first is None:
                return Verdict(False, "ERR_NO_CLICK", facts)
            facts = first
        if facts.reason != VALID:
            return Verdict(False, "ERR_INVALID_CLICK", facts)
        if not -self.skew <= occurred_at - facts.at <= self.window:
            return Verdict(False, "ERR_WINDOW", facts)
        return Verdict(True, None, facts)
