"""The click writer: drains the Redis click streams into Postgres, and the local spool after an
outage of Redis.

Every writer joins one consumer group. A batch is COPYed and inserted idempotently by click id,
and only acknowledged (and deleted from the stream) after the commit, so a writer killed at
any point loses nothing: its entries stay pending and another writer claims them. Each batch's
repeats are judged again against Postgres first (service/dedup.py), one writer at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from service import audience, dedup, metrics
from service.clicks import OLD_ROW_FIELDS, ROW_COLUMNS, Click, copy_text, spooled_clicks
from service.outages import Outage
from service.spool import Spool
from service.store import clicks as sql
from service.store import events as events_sql
from service.store import redis as keys

log = logging.getLogger("mcode.writer")

# Stream entries read at once; each holds the clicks of one click-log batch (up to 256).
BATCH = 200
BLOCK_MS = 500
# After a round that wrote fewer than LINGER_BELOW clicks, wait this long for more: a few hundred
# milliseconds of lag buy batches large enough that the per-batch cost (round trips, a
# transaction) stops mattering.
LINGER_S = 0.25
LINGER_BELOW = 2000  # clicks
# An entry read but not acknowledged for this long belongs to a writer presumed dead.
CLAIM_IDLE_MS = 15_000
CLAIM_EVERY_S = 5.0
PARTITIONS_EVERY_S = 3600.0
# Orders and carts on clicks older than this that still lack the click's dimensions are left so
# (their clicks were stored before dimensions were judged, or are gone): the sweep stays small.
AUDIENCE_SWEEP = timedelta(days=2)
RETRY_S = 1.0
# A read of BATCH entries can be megabytes, read in chunks with the event loop running other
# tasks in between (redis-py times the whole reply): in a web worker under load that took over
# 2 s. The writer is not on a buyer's path, so it may wait longer for Redis than a redirect does.
WRITER_REDIS_TIMEOUT_S = 30.0

Entry = tuple[bytes, dict[bytes, bytes]]
POSTGRES_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


# Errors about the data itself: retrying the same batch would fail forever.
REJECTED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class PostgresUnavailable(Exception):
    pass


@contextlib.asynccontextmanager
async def postgres(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose failures say plainly that Postgres, not Redis, is the trouble."""
    try:
        async with asyncio.timeout(30), pool.acquire() as conn:
            yield conn
    except REJECTED:
        raise
    except POSTGRES_ERRORS as exc:
        raise PostgresUnavailable(repr(exc)) from exc


_HEX = frozenset(b"0123456789abcdef")
_CODE, _DEVICE = ROW_COLUMNS.index("code"), ROW_COLUMNS.index("device_hash")
_NULL_REASON = b"\\N"


def _candidate(row: bytes) -> tuple[dedup.Key, str] | None:
    """(code, device) and click id of a row Redis called valid, or a repeat of a later click
    (a release before the log script knew better); None for any other row (a refusal, a bot, a
    repeat, or a row not written the way Click.row() writes)."""
    head = row.split(b"\t", _DEVICE + 1)
    if len(head) <= _DEVICE + 1:
        return None
    click_id, code, device = head[0], head[_CODE], head[_DEVICE]
    _, reason, original = row.rsplit(b"\t", 2)
    if reason != _NULL_REASON and not (reason == b"ERR_DUP" and original > click_id):
        return None
    if len(click_id) != 28 or not _HEX.issuperset(click_id) or b"\\" in code or not code.isascii():
        return None
    return (code.decode(), device.decode("ascii", "replace")), click_id.decode()


# Rows as stored: the audience dimensions go in before `via`, so that a row's last two columns stay
# its verdict (reason, original click id) for decode() and judged() alike.
STORED_COLUMNS = (*ROW_COLUMNS[:-3], *audience.DIMENSIONS[:-1], *ROW_COLUMNS[-3:])
_IP, _VIA = ROW_COLUMNS.index("ip"), ROW_COLUMNS.index("via")


def with_audience(row: bytes) -> bytes:
    """A row of the click log with the click's audience dimensions judged (columns STORED_COLUMNS);
    a row of the release before `via` gets `link`. A row not written the way Click.row() writes
    is left as it is: Postgres refuses it, and it is set aside."""
    fields = row.split(b"\t")
    if len(fields) == OLD_ROW_FIELDS:
        fields.insert(_VIA, b"link")
    if len(fields) != len(ROW_COLUMNS):
        return row
    ip, user_agent, referer, via = fields[_IP:_VIA + 1]
    try:
        judged = (_COUNTRIES.get(ip) or _judge(_COUNTRIES, ip, lambda v: (audience.country(v),)),
                  _AGENTS.get(user_agent) or _judge(_AGENTS, user_agent, audience.agent),
                  _REFERRERS.get(referer) or _judge(_REFERRERS, referer, lambda v: (audience.referrer(v),)),
                  b"qr" if via == b"qr" else b"link")
    except ValueError:
        return row
    return b"\t".join((*fields[:_VIA], *judged, *fields[_VIA + 1:]))


# A row's fields (COPY text) to their dimensions' columns, remembered: a busy service sees the same
# networks, browsers and referring pages over and over. Each cache is emptied when it grows past
# _CACHED entries (cheaper per row than keeping an LRU order).
_CACHED = 50_000
_COUNTRIES: dict[bytes, bytes] = {}
_AGENTS: dict[bytes, bytes] = {}
_REFERRERS: dict[bytes, bytes] = {}


def _judge(cache: dict[bytes, bytes], field: bytes, judge: Callable[[str], tuple[str, ...]]) -> bytes:
    """The columns (COPY text) of what `judge` makes of the field's value, remembered; ValueError
    when the field is not as Click.row() writes it."""
    if len(cache) >= _CACHED:
        cache.clear()
    judged = cache[field] = "\t".join(copy_text(v) for v in judge(sql.copy_value(field) or "")).encode()
    return judged


def without_audience(row: bytes) -> bytes:
    """A row of STORED_COLUMNS back as the click log wrote it (ROW_COLUMNS), for a person to read."""
    fields = row.split(b"\t")
    if len(fields) != len(STORED_COLUMNS):
        return row
    return b"\t".join([*fields[:_VIA], *fields[_VIA + len(audience.DIMENSIONS) - 1:]])


# Spooled clicks never had Redis's judgement with all it knew: judge every one.
EVERY_CLICK = (0, 2**63)


def _in_doubt(rows: Sequence[bytes], doubt: tuple[int, int] | None) -> list[tuple[int, dedup.Key, str]]:
    """(line, key, click id) of the rows to judge again: candidates stamped within `doubt`."""
    if doubt is None:
        return []
    start, end = doubt
    out = []
    for number, row in enumerate(rows):
        found = _candidate(row)
        if found is not None and start <= int(found[1][:12], 16) <= end:
            out.append((number, *found))
    return out


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def decode(entries: Sequence[Entry]) -> list[bytes]:
    """The click rows (COPY text lines) of stream entries, repeats marked as the log script found them."""
    rows: list[bytes] = []
    for entry_id, fields in entries:
        lines = fields.get(b"c", b"").split(b"\n")
        for mark in filter(None, fields.get(b"d", b"").split(b",")):
            number, _, first = mark.partition(b":")
            if not number.isdigit() or not 0 < int(number) <= len(lines) or not first:
                # Only the log script writes marks; a garbled one is reported, and its row stays
                # as written (the worst case: a repeat stored as a valid click, never a lost one).
                log.error("writer: unreadable repeat mark %r in stream entry %r", mark[:80], entry_id)
                continue
            # A candidate for dedup was written as valid: its last two columns become the repeat.
            head = lines[int(number) - 1].rsplit(b"\t", 2)[0]
            lines[int(number) - 1] = head + b"\tERR_DUP\t" + first
        rows += filter(None, lines)
    return rows


def sizes(entries: Sequence[Entry]) -> list[str | bytes]:
    """(entry id, clicks in it) pairs for the ack script."""
    out: list[str | bytes] = []
    for entry_id, fields in entries:
        n = fields.get(b"n")
        out += [entry_id, n if n is not None and n.isdigit() else str(fields.get(b"c", b"").count(b"\n") + 1)]
    return out


class Writer:
    def __init__(self, pool: asyncpg.Pool, redis: keys.Client, shards: keys.Shards, spool: Spool | None,
                 dedup_window_s: int, name: str | None = None, retention_days: int | None = None) -> None:
        self.pool = pool
        self.redis = redis
        self.shards = shards
        self.prefix = shards.prefix
        self.streams = shards.streams + ([] if isinstance(redis, RedisCluster) else shards.legacy_streams)
        self.ack = redis.register_script(keys.ACK_SCRIPT)
        self.epoch_script = redis.register_script(keys.EPOCH_SCRIPT)
        self.rejects = keys.rejects_key(self.prefix)
        self.spool = spool
        self.window_ms = dedup_window_s * 1000
        self.name = name or consumer_name()
        self.stopping = asyncio.Event()
        # True while entries this writer read may be uncommitted (a commit failed): they are
        # read again from its own pending list before anything new.
        self.own_pending = True
        self.batch = BATCH
        self.claim_idle_ms = CLAIM_IDLE_MS
        self.last_claim = -math.inf
        self.last_partitions = -math.inf
        self.retention_days = retention_days  # None: raw clicks are kept for ever

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, keys.WRITER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self) -> None:
        """Write until stop() is called; a batch already read is committed before returning."""
        log.info("click writer %s started", self.name)
        postgres_outage = Outage("postgres", f"writer {self.name} (clicks wait in the stream)", log)
        redis_outage = Outage("redis", f"writer {self.name}", log)
        while not self.stopping.is_set():
            try:
                written = await self.step()
                if written:  # an idle step may not have touched Postgres at all
                    postgres_outage.ok()
                redis_outage.ok()
                if written < LINGER_BELOW:
                    await self._pause(LINGER_S)
            except PostgresUnavailable as exc:
                postgres_outage.failed(exc)
                await self._pause()
            except (RedisError, RedisClusterException, OSError) as exc:
                redis_outage.failed(exc)
                await self._pause()
        log.info("click writer %s stopped", self.name)

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        await self.redis.aclose()

    async def _pause(self, seconds: float = RETRY_S) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def step(self) -> int:
        """One round: housekeeping when due, then one batch. Returns clicks committed."""
        now = time.monotonic()
        if now - self.last_partitions > PARTITIONS_EVERY_S:
            async with postgres(self.pool) as conn:
                await sql.ensure_partitions(conn)
                dropped = await sql.drop_expired_partitions(conn, self.retention_days) if self.retention_days else []
            if dropped:
                log.info("writer %s: dropped the raw clicks of %s, past %d days of retention (rollups kept)",
                         self.name, ", ".join(dropped), self.retention_days)
            await self.ensure_groups()
            self.last_partitions = now
        written = 0
        if now - self.last_claim > CLAIM_EVERY_S:
            self.last_claim = now
            await self.fill_audience()
            written += await self.claim_abandoned()
            written += await self.replay_spool()
        start = "0" if self.own_pending else ">"
        try:
            reply: Any = await self._read(start)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the streams (a restart without persistence, a flush): the log script
            # makes a stream again with its next click, but not the group writers read it with.
            await self.ensure_groups()
            reply = await self._read(start)
        batches = [(stream, entries) for stream, entries in reply or [] if entries]
        for stream, entries in batches:
            self.own_pending = True  # stays so if a commit fails: read them again first
            written += await self.commit(stream, entries)
        self.own_pending = bool(batches) and start == "0"
        return written

    async def _read(self, start: str) -> Any:
        if isinstance(self.redis, RedisCluster):
            # one read per stream (each lives on its own slot), all at once; none blocks, so an
            # idle writer lingers between rounds instead
            replies = await asyncio.gather(*(
                self.redis.xreadgroup(keys.WRITER_GROUP, self.name, {stream: start}, count=self.batch)
                for stream in self.streams), return_exceptions=True)
            failed = [r for r in replies if isinstance(r, BaseException)]
            if failed:
                self.own_pending = True  # the reads that worked delivered entries: read those again first
                raise failed[0]
            return [pair for reply in replies for pair in reply or []]  # type: ignore[union-attr]
        return await self.redis.xreadgroup(
            keys.WRITER_GROUP, self.name, dict.fromkeys(self.streams, start), count=self.batch,
            block=None if self.own_pending else BLOCK_MS,
        )

    async def commit(self, stream: bytes | str, entries: Sequence[Entry]) -> int:
        """Store and acknowledge entries; returns the clicks they held that Postgres took."""
        rows = decode(entries)
        shard = self.shards.of_stream(stream)
        new, bad = await self.store(rows, None, shard)
        if bad:
            await self._set_aside(bad)
        await self.ack(keys=[stream, self.shards.backlog(shard)], args=[keys.WRITER_GROUP, *sizes(entries)])
        metrics.CLICKS_WRITTEN.inc(new)  # a click delivered again is not counted again
        return len(rows) - len(bad)

    async def store(self, rows: Sequence[bytes], doubt: tuple[int, int] | None,
                    shard: int | None = 0) -> tuple[int, list[bytes]]:
        """Store the rows in one transaction, having judged again the repeats of those stamped
        within `doubt` (ms; None: the doubt span Redis holds now for their shard); returns how many were new,
        and the rows Postgres refused.

        Outside a doubt span Redis's verdicts stand (it saw every first click), and commits
        share the judgement lock; a commit that judges takes it alone, so it sees every click
        committed before it and every commit after it sees it. The span is read again once the
        shared lock is held: a judging commit may have opened it meanwhile."""
        rows = [with_audience(row) for row in rows]  # before the transaction: no lock waits on it
        while True:
            async with postgres(self.pool) as conn, conn.transaction():
                span = doubt or await keys.doubt(self.redis, self.shards, shard)
                candidates = _in_doubt(rows, span)
                await sql.lock_judgement(conn, exclusive=bool(candidates))
                if not candidates and doubt is None and _in_doubt(rows, await keys.doubt(self.redis, self.shards,
                                                                                         shard)):
                    continue  # a span opened since: roll back and judge, alone
                judged = await self.judged(conn, rows, candidates)
                try:
                    return await sql.write_rows(conn, judged, STORED_COLUMNS), []
                except REJECTED:
                    return await self._one_by_one(conn, judged)

    async def judged(self, conn: asyncpg.Connection, rows: Sequence[bytes],
                     candidates: list[tuple[int, dedup.Key, str]]) -> list[bytes]:
        """The rows with the candidates (line, key, click id) judged again (service/dedup.py): a
        repeat is rewritten as ERR_DUP, and stored clicks whose verdict it changes are changed."""
        if not candidates:
            return list(rows)
        new: dict[dedup.Key, list[dedup.Seen]] = {}
        lines: dict[str, list[int]] = {}  # a click sent again may be in a batch twice: both lines get its verdict
        for number, key, click_id in candidates:
            if click_id not in lines:
                new.setdefault(key, []).append(dedup.Seen(click_id, int(click_id[:12], 16)))
            lines.setdefault(click_id, []).append(number)
        times = [int(click_id[:12], 16) for click_id in lines]
        stored = await sql.around(conn, list(new), _utc(min(times) - self.window_ms), _utc(max(times) + self.window_ms))
        valid: dict[dedup.Key, list[dedup.Seen]] = {}
        repeats_of: dict[str, list[dedup.Seen]] = {}
        facts = {}
        for record in stored:
            seen = dedup.Seen(record["click_id"], round(record["clicked_at"].timestamp() * 1000),
                              record["original_click_id"])
            facts[seen.click_id] = record
            if record["reason"] is None:
                valid.setdefault((record["code"], record["device_hash"]), []).append(seen)
            elif seen.original:
                repeats_of.setdefault(seen.original, []).append(seen)
        verdicts = dedup.judge(new, valid, repeats_of, self.window_ms)
        out = list(rows)
        for click_id, numbers in lines.items():
            first = verdicts.repeats.get(click_id)
            verdict = b"\tERR_DUP\t" + first.encode() if first else b"\t\\N\t\\N"
            for number in numbers:
                out[number] = out[number].rsplit(b"\t", 2)[0] + verdict
        if verdicts.changed:
            await sql.change_verdicts(conn, [
                (click_id, facts[click_id]["clicked_at"], facts[click_id]["code"], facts[click_id]["reason"] is None,
                 first) for click_id, first in verdicts.changed.items()
            ])
            log.warning("writer %s: %d stored clicks judged again after an earlier click arrived late",
                        self.name, len(verdicts.changed))
        return out

    async def _one_by_one(self, conn: asyncpg.Connection, rows: Sequence[bytes]) -> tuple[int, list[bytes]]:
        """Postgres refused the batch for its data: write what it accepts. Returns how many
        were new, and the rows refused."""
        new, refused = 0, []
        for row in rows:
            try:
                new += await sql.write_rows(conn, [row], STORED_COLUMNS)
            except REJECTED as exc:
                log.error("writer: postgres refused click row %r: %r", row[:40], exc)
                refused.append(without_audience(row))
        return new, refused

    async def _set_aside(self, lines: Sequence[bytes]) -> None:
        """Clicks that can never be written go to a stream of their own for a person to look at."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for line in lines:
                pipe.xadd(self.rejects, {"c": line})
            await pipe.execute()
        metrics.CLICKS_REJECTED.inc(len(lines))
        log.error("writer: set aside %d clicks in %s", len(lines), self.rejects)

    async def fill_audience(self) -> None:
        """Orders and carts posted before the writer stored their click get its dimensions now."""
        async with postgres(self.pool) as conn:
            await events_sql.fill_audience(conn, datetime.now(UTC) - AUDIENCE_SWEEP)

    async def claim_abandoned(self) -> int:
        written = 0
        for stream in self.streams:
            cursor: Any = "0-0"
            while True:
                cursor, entries, *_ = await self.redis.xautoclaim(
                    stream, keys.WRITER_GROUP, self.name, self.claim_idle_ms, start_id=cursor, count=self.batch
                )
                live = [e for e in entries if e[1]]  # entries deleted meanwhile come back empty
                if live:
                    log.info("writer %s took over %d abandoned clicks", self.name, len(live))
                    written += await self.commit(stream, live)
                if cursor in (b"0-0", "0-0"):
                    break
        return written

    async def doubt_from(self, clicks: Sequence[tuple[Click, bool]]) -> None:
        """Open a doubt span, in each shard of the clicks, from a second before its first click."""
        first: dict[int, int] = {}
        for click, _ in clicks:
            shard = self.shards.of_device(click.code, click.device_hash) if self.shards.cluster else 0
            first[shard] = min(first.get(shard, click.at_ms), click.at_ms)
        until = int(time.time() * 1000) + self.window_ms
        for shard, at_ms in first.items():
            await self.epoch_script(keys=[self.shards.epoch(shard), self.shards.doubt(shard)],
                                    args=[self.window_ms, at_ms - 1000, until])

    async def replay_spool(self) -> int:
        """Clicks spooled while Redis was down: judged for repeats against Postgres, then written."""
        if self.spool is None:
            return 0
        spool, written = self.spool, 0
        paths = await asyncio.to_thread(lambda: list(spool.claim()))
        for number, path in enumerate(paths):
            try:
                clicks = await asyncio.to_thread(spooled_clicks, path)  # a web worker's loop must not wait on the disk
                if clicks:  # a valid click is a repeat candidate: the dedup flag says no more than that
                    # repeats of these answered meanwhile must be judged too, by whichever writer; with
                    # Redis down the click log opens that span itself once Redis answers again
                    with contextlib.suppress(RedisError, RedisClusterException, OSError):
                        await self.doubt_from(clicks)
                    _, bad = await self.store([c.row().encode() for c, _ in clicks], EVERY_CLICK)
                    if bad:
                        await self._set_aside(bad)
            except BaseException:
                for left in paths[number:]:
                    spool.release(left)
                raise
            await asyncio.to_thread(spool.done, path)
            written += len(clicks)
            log.info("writer %s replayed %d spooled clicks from %s", self.name, len(clicks), path.name)
        return written

