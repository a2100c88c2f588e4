"""The click record, and the click log: one Redis round trip for many clicks.

In one script call per batch: each click's dedup mark (SET NX holding the first click id) and
attribution record (for order events), and one stream entry holding the batch for the writer.
When Redis cannot be reached the clicks go to the local spool instead (see spool.py), so an
answered click is never lost.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from redis.exceptions import RedisError

from service import audience, metrics
from service.spool import Spool
from service.store import redis as keys
from service.store import resp

log = logging.getLogger("mcode.clicks")

VALID = ""  # the reason of a valid click, as carried in streams and attribution records
# Attribution records outlive the window a little, so an order posted just at its end still
# finds the click in Redis; later deliveries fall back to Postgres.
ATTRIBUTION_SLACK_S = 600
# The longest a buyer waits on a stalled Redis before the click goes to the local spool instead
# (a script over a full batch runs in ~1-2 ms; the rest is margin for a busy event loop).
REDIS_TIMEOUT_S = 0.2
# After a failed call, clicks go straight to the spool, and Redis is probed (PING) this often
# until it answers: buyers' clicks never wait on a Redis that is known to be down or hung.
REDIS_RETRY_S = 1.0
# A burst larger than this is split, so one script call stays well inside REDIS_TIMEOUT_S
# and does not hold Redis (single-threaded) for long.
MAX_BATCH = 256
MAX_INFLIGHT = 4
# No buyer waits on a replay: it may take longer than a redirect's call.
REPLAY_TIMEOUT_S = 5.0
# The calls that gave Redis its clicks are kept this long (at most RESEND_MAX of them), to be made
# again if Redis turns out to have lost its data before a writer stored them (normally a second).
RESEND_S = 30.0
RESEND_MAX = 100_000


class _RandomHex:
    """64-bit random hex strings from the OS generator, drawn 512 at a time (one syscall)."""

    def __init__(self) -> None:
        self.pool: list[str] = []

    def __call__(self) -> str:
        if not self.pool:
            raw = secrets.token_hex(8 * 512)
            self.pool = [raw[i : i + 16] for i in range(0, len(raw), 16)]
        return self.pool.pop()


_random_hex = _RandomHex()


def new_click_id(now_ms: int, shard: int = 0) -> str:
    """12 hex digits of milliseconds, 52 random bits, and 3 hex digits of the click's shard:
    time-ordered, unguessable, the time can be read back to find the click's day partition, and
    the shard to find its attribution record."""
    return f"{now_ms:012x}{_random_hex()[:13]}{shard:03x}"


def click_time(click_id: str) -> datetime:
    return datetime.fromtimestamp(int(click_id[:12], 16) / 1000, UTC)


NULL = "\\N"
ROW_COLUMNS = (
    "click_id", "clicked_at", "code", "seller_id", "product_id", "device_hash", "ip", "user_agent", "referer",
    "via", "reason", "original_click_id",
)
# Rows of the release before `via` (streams and spools it left): 'link' goes in before the reason.
OLD_ROW_FIELDS = len(ROW_COLUMNS) - 1
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_COPY_ESCAPED = re.compile(r"\\(.)")
_COPY_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _from_copy_text(field: str) -> str | None:
    if field == NULL:
        return None
    return _COPY_ESCAPED.sub(lambda m: _COPY_UNESCAPES.get(m.group(1), m.group(1)), field) if "\\" in field else field


_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")


def copy_text(value: str | None) -> str:
    """A value as COPY's text format has it: NULL as \\N, separators escaped."""
    if value is None:
        return NULL
    return value.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_ms(at_ms: int) -> str:
    """A UTC time in ms as Postgres reads it; the seconds are formatted once, not per click."""
    return f"{_iso_second(at_ms // 1000)}.{at_ms % 1000:03d}+00:00"


@dataclass(slots=True)
class Click:
    click_id: str
    at_ms: int
    code: str
    seller_id: str | None
    product_id: str | None
    reason: str  # VALID or an ERR_ code
    device_hash: str
    ip: str
    user_agent: str
    referer: str
    original_click_id: str | None = None
    via: str = "link"  # or "qr"; last, so that a spool written before it reads back

    def payload(self) -> str:
        return json.dumps([
            self.click_id, self.at_ms, self.code, self.seller_id, self.product_id, self.reason,
            self.device_hash, self.ip, self.user_agent, self.referer, self.original_click_id, self.via,
        ], separators=(",", ":"))

    @classmethod
    def from_payload(cls, payload: str | bytes) -> Click:
        return cls(*json.loads(payload))

    @classmethod
    def from_row(cls, row: str) -> Click:
        """The click of a line row() wrote."""
        fields = row.split("\t")
        if len(fields) == OLD_ROW_FIELDS:
            fields.insert(-2, "link")
        (click_id, _, code, seller_id, product_id, device, ip, user_agent, referer, via, reason,
         original) = (_from_copy_text(f) for f in fields)
        assert click_id is not None and code is not None and device is not None
        return cls(click_id, int(click_id[:12], 16), code, seller_id, product_id, reason or VALID, device, ip or "",
                   user_agent or "", referer or "", original, via or "link")

    def row(self) -> str:
        """The click as a line of COPY text (columns ROW_COLUMNS): the click log's stream entries
        carry these lines, so the writer COPYs them without parsing a click."""
        return "\t".join((
            self.click_id, iso_ms(self.at_ms), copy_text(self.code), copy_text(self.seller_id),
            copy_text(self.product_id), self.device_hash, copy_text(self.ip), copy_text(self.user_agent),
            copy_text(self.referer), self.via, self.reason or NULL, copy_text(self.original_click_id),
        ))

    def record(self) -> tuple[Any, ...]:
        """The row for the clicks table (columns store.clicks.COLUMNS)."""
        return (
            self.click_id, datetime.fromtimestamp(self.at_ms / 1000, UTC), self.code, self.seller_id,
            self.product_id, self.reason or None, self.device_hash, self.ip, self.user_agent, self.referer,
            self.original_click_id, *audience.judge(self.ip, self.user_agent, self.referer, self.via),
        )


def spooled_clicks(path: Path) -> list[tuple[Click, bool]]:
    """The clicks of a spool file with their dedup flags, oldest first: pumps spool concurrently,
    so a file is not in time order, and each flag must stay with its own click."""
    clicks = []
    for payload, dedup in Spool.read(path):
        try:
            clicks.append((Click.from_payload(payload), dedup))
        except (ValueError, TypeError):
            log.error("spool %s: a line that is not a click, left out: %.80r", path, payload)
    return sorted(clicks, key=lambda pair: pair[0].at_ms)


Batch = list[tuple["Click", bool, asyncio.Future[str]]]
Part = tuple[int, Sequence[tuple["Click", bool, object]]]
ROWS = 3  # where a part's rows stand in LOG_SCRIPT's ARGV (its dedup flags two after)


class ClickLog:
    """Logs the clicks of an event-loop tick with one script call (on Redis Cluster, one per
    shard among them, all in flight at once); at most MAX_INFLIGHT batches at once. Clicks that
    arrive while all are in flight wait for the next free one (group commit), so under load
    batches grow by themselves and the client's per-call cost is paid once for many clicks,
    while a burst cannot pile up calls that time out."""

    def __init__(self, redis: resp.Redis, shards: keys.Shards, dedup_window_s: int, attribution_window_s: int,
                 spool: Spool) -> None:
        self.redis = redis
        self.shards = shards
        self.prefix = shards.prefix
        self.spool = spool
        self.dedup_ttl = dedup_window_s
        # a bucket's hash lives as long as its last click needs it
        self.attribution_ttl = attribution_window_s + ATTRIBUTION_SLACK_S + keys.ATTRIBUTION_BUCKET_MS // 1000
        self.script = resp.Script(keys.LOG_SCRIPT)
        self.epoch_script = resp.Script(keys.EPOCH_SCRIPT)
        self.redis_down = False
        self.down_since = 0.0
        self.spooled = 0  # clicks spooled since Redis was last seen answering
        self.probe: asyncio.Task[None] | None = None
        self.replaying: asyncio.Task[int] | None = None
        self.checking: asyncio.Task[None] | None = None
        # (time, shard, rows, dedup flags) of the parts Redis took lately
        self.recent: collections.deque[tuple[float, int, str, str]] = collections.deque(maxlen=RESEND_MAX)
        self.epochs: dict[int, bytes] = {}
        self.resend: list[tuple[float, int, str, str]] = []  # parts to send again, oldest first
        self.suspect: set[int] = set()  # shards whose master failed over: their recent parts go again
        self.recheck = False  # something changed while a check ran: check again when it ends
        self.checks = asyncio.Lock()  # one check (and its resending) at a time
        self.pending: Batch = []
        self.pumps: set[asyncio.Task[None]] = set()
        self.turn = 0  # the stream of the next batch, on one Redis node

    def new_click_id(self, at_ms: int, code: str, device_hash: str) -> str:
        """On a cluster the id names the click's shard, where its attribution record is."""
        return new_click_id(at_ms, self.shards.of_device(code, device_hash) if self.shards.cluster else 0)

    def log(self, click: Click, dedup: bool) -> asyncio.Future[str]:
        """Resolves, once the click is durable, to the first click's id for a repeat, else ''."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self.pending.append((click, dedup, future))
        # A running pump takes whatever is pending when its call returns; a new one is needed
        # for the first click of a quiet spell, or when no pump is left at all.
        if len(self.pumps) < MAX_INFLIGHT and (len(self.pending) == 1 or not self.pumps):
            self.pumps.add(loop.create_task(self._run()))
        return future

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the rest of this loop tick add its clicks
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                await self._write(batch)
        finally:
            # In the same step that saw nothing pending: no click can arrive in between and
            # find every pump gone but still counted.
            task = asyncio.current_task()
            if task is not None:
                self.pumps.discard(task)

    def parts(self, batch: Sequence[tuple[Click, bool, Any]]) -> list[Part]:
        """The batch by shard, each part in the batch's order (on one Redis node, one part to the
        next stream in turn: slots do not matter there, and one stream entry costs less)."""
        if not self.shards.cluster:
            self.turn = (self.turn + 1) % self.shards.count
            return [(self.turn, batch)]
        by_shard: dict[int, list[tuple[Click, bool, Any]]] = {}
        for item in batch:
            by_shard.setdefault(self.shards.of_device(item[0].code, item[0].device_hash), []).append(item)
        return list(by_shard.items())

    async def _write(self, batch: Batch) -> None:
        if self.redis_down:
            await self._spool(batch)
            return
        parts = self.parts(batch)
        if len(parts) > 1:  # a cluster: a call per shard, each to its own master
            await asyncio.gather(*(self._call(part) for part in parts))
        else:
            await self._call(parts[0])
        if self.shards.cluster and self._failovers():
            self.check_soon()

    async def _call(self, part: Part) -> None:
        """One script call for the part; its clicks go to the spool if it fails."""
        shard, items = part
        batch = cast(Batch, items)
        try:
            call_keys, arguments = self._arguments(part)
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                repeats = await self.redis.evalsha(self.script, call_keys, *arguments)
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            log.warning("redis unavailable for %d clicks, spooling them locally: %s: %s", len(batch),
                        type(exc).__name__, exc)
            self._mark_down()
            await self._spool(batch)
            return
        # Kept as the part's rows and flags, two strings: the garbage collector walks a Click per
        # click (or a list per batch) again at every full collection, at buyers' expense (about
        # 14 us a click under load), and leaves strings alone.
        now = time.monotonic()
        self.recent.append((now, shard, cast(str, arguments[ROWS]), cast(str, arguments[ROWS + 2])))
        while self.recent and self.recent[0][0] < now - RESEND_S:
            self.recent.popleft()
        firsts = {int(repeats[i]): repeats[i + 1] for i in range(0, len(repeats), 2)}
        if any(line < 0 for line in firsts):  # a shard lost its data without a failed call (a flush, a restart)
            self.recheck = True
            self.check_soon()
        for line, (_, _, future) in enumerate(batch, 1):
            if not future.done():
                first = firsts.get(line, VALID)
                future.set_result(first.decode() if isinstance(first, bytes) else first)

    def _arguments(self, part: Part) -> tuple[list[resp.Arg], list[resp.Arg]]:
        """LOG_SCRIPT's KEYS and ARGV for one part (the script takes several; on one node a whole
        batch is one part, on a cluster the parts go to different masters)."""
        shard, items = part
        lengths: list[int] = []
        buckets: list[resp.Arg] = []
        bucket = ""
        for click, _, _ in items:
            # (on a cluster the part's shard; on one node every click in one hash per second)
            key = self.shards.attribution_bucket(shard, click.at_ms // keys.ATTRIBUTION_BUCKET_MS)
            if key != bucket:
                bucket = key
                buckets.append(key)
                lengths.append(0)
            lengths[-1] += 1
        call_keys: list[resp.Arg] = [self.shards.streams[shard], self.shards.backlog(shard),
                                     self.shards.epoch(shard), self.shards.doubt(shard), *buckets]
        call_keys += [self.shards.dedup(shard if self.shards.cluster else 0, c.code, c.device_hash)
                      for c, dedup, _ in items if dedup]
        args: list[resp.Arg] = [
            self.dedup_ttl, self.attribution_ttl, 1, "\n".join(c.row() for c, _, _ in items), len(items),
            "".join("d" if dedup else "-" for _, dedup, _ in items),
            self.epochs.get(shard if self.shards.cluster else 0, b""), len(lengths), *lengths,
        ]
        for c, _, _ in items:
            args += [c.click_id, keys.attribution_value(c.at_ms, c.reason, "", c.code, c.seller_id)]
        return call_keys, args

    def _failovers(self) -> bool:
        """A master replaced by its replica may have acknowledged clicks it never passed on: the
        recent parts of its shards are to go again (check_epoch sends them)."""
        slots = self.redis.failed_over()
        lost = {shard for shard, slot in enumerate(self.shards.slots) if slot in slots}
        if lost:
            log.warning("redis cluster failover: the clicks of the last %.0f s of %d shards go again",
                        RESEND_S, len(lost))
            self.suspect |= lost
        return bool(lost)

    def _mark_down(self) -> None:
        if not self.redis_down:
            self.down_since = time.monotonic()
        self.redis_down = True
        if self.probe is None or self.probe.done():
            self.probe = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(REDIS_RETRY_S)
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_S * 5):  # every master of a cluster
                    await self.redis.ping()
            except (RedisError, OSError, TimeoutError):
                continue
            self._failovers()
            try:  # doubt from a second before the outage began, in wall-clock time
                await self.check_epoch(now_ms() - int((time.monotonic() - self.down_since + 1) * 1000))
            except (RedisError, OSError, TimeoutError):
                continue  # down again: the next answer checks again, from the same start
            log.warning("redis answers again after %.1f s: clicks go back to it; %d were spooled meanwhile",
                        time.monotonic() - self.down_since, self.spooled)
            self.redis_down = False
            self.spooled = 0
            self.replay_soon()
            return

    async def _spool(self, batch: list[tuple[Click, bool, asyncio.Future[str]]]) -> None:
        # A timeout may have hidden a script that did run: the writer's insert is idempotent
        # by click id, so a click in both the stream and the spool is still stored once.
        try:
            await asyncio.to_thread(self.spool.append, [(c.payload(), d) for c, d, _ in batch])
        except Exception as exc:
            log.error("could not spool %d clicks: %s: %s", len(batch), type(exc).__name__, exc)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.spooled += len(batch)
        for _, _, future in batch:
            if not future.done():
                future.set_result(VALID)

    async def start(self) -> None:
        """Learn Redis's epoch and put back what this host spooled before (a restart)."""
        try:
            await self.check_epoch()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis unavailable at start (%s: %s): clicks go to the spool until it answers",
                        type(exc).__name__, exc)
            self._mark_down()
            return
        self.replay_soon()

    async def check_epoch(self, doubt_since_ms: int | None = None) -> None:
        """Learn each shard's epoch; where it changed since last seen (or the shard's master
        failed over), send the recent clicks again. With `doubt_since_ms`, the clicks stamped from
        then on are to be judged again by the writers (this process spooled some: a repeat
        answered meanwhile may be of one of them)."""
        async with self.checks:
            await self._check_epoch(doubt_since_ms)

    async def _check_epoch(self, doubt_since_ms: int | None) -> None:
        args: list[resp.Arg] = [self.dedup_ttl * 1000]
        if doubt_since_ms is not None:
            args += [doubt_since_ms, now_ms() + self.dedup_ttl * 1000]
        shards = self.shards.places()
        async with asyncio.timeout(REPLAY_TIMEOUT_S):
            epochs = await asyncio.gather(*(
                self.redis.evalsha(self.epoch_script, [self.shards.epoch(s), self.shards.doubt(s)], *args)
                for s in shards))
        lost = {s for s, epoch in zip(shards, epochs, strict=True) if self.epochs.get(s, epoch) != epoch}
        self.epochs = dict(zip(shards, epochs, strict=True))
        lost |= self.suspect
        self.suspect = set()
        if lost:  # (kept in `recent` too: should the shard lose its data again, they go again)
            self.resend = [*self.resend, *(part for part in self.recent if part[1] in lost or not self.shards.cluster)]
        if self.resend:
            log.warning("redis lost clicks of %d shards (epoch changed, or failover): sending the %d clicks of "
                        "the last %.0f s again", len(lost), sum(len(flags) for *_, flags in self.resend), RESEND_S)
            while self.resend:  # each stored once: the writer's inserts are idempotent by click id
                _, shard, rows, flags = self.resend[0]
                items = [(Click.from_row(row), flag == "d", None) for row, flag in zip(rows.split("\n"), flags,
                                                                                       strict=True)]
                call_keys, arguments = self._arguments((shard, items))
                async with asyncio.timeout(REPLAY_TIMEOUT_S):
                    await self.redis.evalsha(self.script, call_keys, *arguments)
                self.resend.pop(0)

    def check_soon(self) -> None:
        """Check the epoch (and send recent clicks again) in the background."""
        if self.checking is None or self.checking.done():
            self.checking = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        try:
            while True:
                self.recheck = False
                await self.check_epoch()
                if not (self.recheck or self.suspect):
                    return
        except (RedisError, OSError, TimeoutError):
            self._mark_down()  # the probe checks again once Redis answers

    def replay_soon(self) -> None:
        """Put the host's spooled clicks back into Redis, in the background."""
        if self.replaying is None or self.replaying.done():
            self.replaying = asyncio.get_running_loop().create_task(self.replay())

    async def replay(self) -> int:
        """Spooled clicks back into Redis through the log script, oldest first with their dedup
        flags, so they reach Postgres by the usual path whatever runs the writers; returns how
        many. A file is deleted only once all of it is in Redis; if Redis fails again, the rest
        waits for the next time it answers (a click sent twice is stored once)."""
        moved = 0
        paths = await asyncio.to_thread(lambda: list(self.spool.claim()))
        for number, path in enumerate(paths):
            try:
                clicks = await asyncio.to_thread(spooled_clicks, path)
                for start in range(0, len(clicks), MAX_BATCH):
                    parts = self.parts([(c, dedup, None) for c, dedup in clicks[start:start + MAX_BATCH]])
                    # a file may be older than this process's outage: the writers judge its span
                    async with asyncio.timeout(REPLAY_TIMEOUT_S):
                        await asyncio.gather(*(self.redis.evalsha(
                            self.epoch_script, [self.shards.epoch(s), self.shards.doubt(s)], self.dedup_ttl * 1000,
                            items[0][0].at_ms - 1000, now_ms() + self.dedup_ttl * 1000) for s, items in parts))
                        calls = [self._arguments(part) for part in parts]
                        await asyncio.gather(*(self.redis.evalsha(self.script, k, *a) for k, a in calls))
            except (RedisError, OSError, TimeoutError) as exc:
                for left in paths[number:]:
                    self.spool.release(left)
                metrics.DEPENDENCY_ERRORS.labels("redis").inc()
                log.warning("spool replay into redis stopped after %d clicks: %s: %s", moved, type(exc).__name__, exc)
                self._mark_down()
                return moved
            except BaseException:
                for left in paths[number:]:
                    self.spool.release(left)
                raise
            await asyncio.to_thread(self.spool.done, path)
            moved += len(clicks)
        if moved:
            log.warning("spool replay: %d clicks put back into redis", moved)
        return moved

    async def drain(self) -> None:
        """Wait for every click already handed over (graceful shutdown)."""
        while self.pumps:
            await asyncio.gather(*self.pumps, return_exceptions=True)
        if self.probe is not None:
            self.probe.cancel()
        for task in (self.replaying, self.checking):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
