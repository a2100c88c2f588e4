"""SQL for the clicks table: day partitions, idempotent batch writes, look-ups by click id."""

from __future__ import annotations

import asyncio
import operator
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from service.audience import DIMENSIONS, UNKNOWN

COLUMNS = (
    "click_id", "clicked_at", "code", "seller_id", "product_id", "reason",
    "device_hash", "ip", "user_agent", "referer", "original_click_id", *DIMENSIONS,
)
_COLS = ", ".join(COLUMNS)
# Partitions made ahead of time, so that the default partition stays empty in normal running.
DAYS_AHEAD = 7


def partition_name(day: date) -> str:
    return f"clicks_{day:%Y%m%d}"


async def ensure_partitions(conn: asyncpg.Connection, today: date | None = None, days_back: int = 1) -> list[str]:
    """Day partitions from `days_back` days ago to DAYS_AHEAD days ahead; returns those made now."""
    today = today or datetime.now(UTC).date()
    existing = {r["relname"] for r in await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'clicks'::regclass"
    )}
    made = []
    for offset in range(-days_back, DAYS_AHEAD + 1):
        day = today + timedelta(days=offset)
        name = partition_name(day)
        if name in existing:
            continue
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        try:
            # the lock on `clicks` is waited for briefly (see RETENTION_LOCK_TIMEOUT_MS), else
            # tried again next round: days are made a week ahead
            if await _with_lock_timeout(
                conn, f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF clicks "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
            ):
                made.append(name)
        except asyncpg.CheckViolationError:
            pass  # the default partition already holds rows of that day; they stay there
        except asyncpg.DuplicateTableError:
            pass  # another writer made it first
    return made


# Retention. Dropping or detaching a partition takes ACCESS EXCLUSIVE on `clicks` and its default
# partition (DETACH ... CONCURRENTLY is refused while a default partition exists), which waits for
# every transaction using the table and makes every later one wait behind it. So each try waits
# at most this long for its lock, then gives up until a later round: a writer's batch or a report
# is held up by at most that, never by a long-running query ahead of the drop.
RETENTION_LOCK_TIMEOUT_MS = 200
RETENTION_TRIES = 3
RETENTION_PAUSE_S = 0.5
# At most this many partitions per call (a first run over a long history catches up over a few).
RETENTION_MAX_PARTITIONS = 31
# Rows of expired days in the default partition are deleted this many at a time, at most
# RETENTION_MAX_CHUNKS times per call: each chunk is a short transaction of its own.
RETENTION_CHUNK = 10_000
RETENTION_MAX_CHUNKS = 100
# One process at a time drops partitions (any fixed number will do).
RETENTION_LOCK = 0x6D63726574
# A partition is detached, marked so, then dropped in a transaction of its own (its files are
# unlinked without holding `clicks`); a table so marked that a crash left behind is dropped later.
_DETACHED_MARK = "mcode retention: detached, to be dropped"
_DAY_PARTITION = re.compile(r"clicks_(\d{8})")


def _retention_cutoff(retention_days: int, today: date) -> date:
    """The first day kept: days before it are past retention. Never later than yesterday."""
    return min(today - timedelta(days=max(retention_days, 0)), today - timedelta(days=1))


async def _with_lock_timeout(conn: asyncpg.Connection, *statements: str) -> bool:
    """Run the statements in one transaction, each lock waited for at most
    RETENTION_LOCK_TIMEOUT_MS; False when a lock was not granted in time (nothing done)."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{RETENTION_LOCK_TIMEOUT_MS}ms'")
            for statement in statements:
                await conn.execute(statement)
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def drop_expired_partitions(conn: asyncpg.Connection, retention_days: int,
                                  today: date | None = None) -> list[str]:
    """Drop the day partitions of `clicks` whose whole (UTC) day is more than `retention_days`
    days before `today` (default: today in UTC; today's and yesterday's are always kept), and
    delete, in bounded chunks, the default partition's clicks of those days. Returns the names
    of the partitions dropped; those whose lock was not granted in time are left for a later
    call. Rollups, orders, carts and events are untouched: reports over dropped days stay exact.

    Safe while writers and reports run (see RETENTION_LOCK_TIMEOUT_MS); one process at a time
    (the others return at once). `conn` must not be inside a transaction: every step commits
    on its own."""
    if conn.is_in_transaction():
        raise RuntimeError("drop_expired_partitions commits step by step: call it outside a transaction")
    today = today or datetime.now(UTC).date()
    cutoff = _retention_cutoff(retention_days, today)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK):
        return []
    try:
        tables = await conn.fetch(
            """
            SELECT c.relname, i.inhrelid IS NOT NULL AS attached, obj_description(c.oid, 'pg_class') AS note
            FROM pg_class c
            LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'clicks'::regclass
            WHERE c.relkind = 'r' AND c.relname ~ '^clicks_[0-9]{8}$'
              AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'clicks'::regclass)
            ORDER BY c.relname
            """
        )
        expired = []
        for table in tables:
            match = _DAY_PARTITION.fullmatch(table["relname"])
            try:
                day = datetime.strptime(match.group(1), "%Y%m%d").date() if match else None
            except ValueError:
                day = None
            if day is not None and day < cutoff and (table["attached"] or table["note"] == _DETACHED_MARK):
                expired.append((table["relname"], table["attached"]))
        dropped = []
        for name, attached in expired[:RETENTION_MAX_PARTITIONS]:
            for attempt in range(RETENTION_TRIES):
                if attempt:
                    await asyncio.sleep(RETENTION_PAUSE_S)
                if attached and await _with_lock_timeout(
                    conn, f"ALTER TABLE clicks DETACH PARTITION {name}",
                    f"COMMENT ON TABLE {name} IS '{_DETACHED_MARK}'",
                ):
                    attached = False
                if not attached and await _with_lock_timeout(conn, f"DROP TABLE IF EXISTS {name}"):
                    dropped.append(name)
                    break
            else:
                break  # `clicks` is busy (a long query holds it): the rest waits for a later round
        await _delete_expired_defaults(conn, cutoff)
        return dropped
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)


async def _delete_expired_defaults(conn: asyncpg.Connection, cutoff: date) -> int:
    """Clicks of days past retention that the default partition holds (days that had no partition
    of their own when they were written); returns how many were deleted."""
    before = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    deleted = 0
    for _ in range(RETENTION_MAX_CHUNKS):
        status = await conn.execute(
            "DELETE FROM clicks_default WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM clicks_default WHERE clicked_at < $1 LIMIT $2))",
            before, RETENTION_CHUNK,
        )
        n = int(status.split()[-1])
        deleted += n
        if n < RETENTION_CHUNK:
            break
    return deleted


# Every invalid reason, in the SPEC's order: one count column each in the rollups and reports.
REASON_COLUMNS = ("ERR_400", "ERR_403", "ERR_404", "ERR_410", "ERR_PREFETCH", "ERR_BOT", "ERR_DUP")
_COUNTS = ", ".join(f'"{r}"' for r in REASON_COLUMNS)
_COUNT_COLUMNS = ("clicks", "valid_clicks", *(f'"{r}"' for r in REASON_COLUMNS))
# Click counts are kept by the writer, in the transaction that stores the clicks, per code and UTC
# hour (click_rollups) and per code and quarter hour (click_rollups_15m, migration 0009); and the
# same again per seller, audience dimension and value (seller_audience(_15m), migration 0010).
# An hourly row is always the sum of its hour's quarter rows.
_QUARTER = "date_bin('15 minutes', {0}, timestamptz '2000-01-01 00:00:00+00')"
_HOUR = "date_trunc('hour', {0}, 'UTC')"
# A click's (dimension, value) pairs, as SQL over a row `s` of clicks; a click stored before the
# dimensions were judged counts as unknown (service/audience.py UNKNOWN), but for its referrer.
_REFERER_HOST = r"lower(substring(s.referer from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'))"
_AUDIENCE_PAIRS = ", ".join(
    f"('{d}', coalesce(s.{d}, {_REFERER_HOST + ', ' if d == 'referrer' else ''}'{UNKNOWN[d]}'))" for d in DIMENSIONS
)
_PER_AUDIENCE = f"CROSS JOIN LATERAL (VALUES {_AUDIENCE_PAIRS}) AS a(dimension, value)"


class _Rollup:
    """A pair of rollup tables (quarter hours, hours): counts per owner (a code, or a seller for
    the seller-wide tables), time bucket and the rollup's keys."""

    def __init__(self, quarters: str, hours: str, keys: tuple[str, ...] = (), per_row: str = "",
                 owner: str = "code") -> None:
        self.quarters, self.hours, self.keys, self.per_row, self.owner = quarters, hours, keys, per_row, owner
        extra = "".join(f"{k}, " for k in keys)
        # a code's rows name its seller (for reports over one seller); a seller's rows are its own
        per_code = owner == "code"
        counts = ("seller_id, " if per_code else "") + f"clicks, valid_clicks, {_COUNTS}"
        self.into_quarters = f"INSERT INTO {quarters} ({owner}, quarter, {extra}{counts})"
        self.into_hours = f"INSERT INTO {hours} ({owner}, hour, {extra}{counts})"
        self.quarter_key = f"(quarter, {owner}{''.join(', ' + k for k in keys)})"
        self.hour_key = f"({owner}, hour{''.join(', ' + k for k in keys)})"
        self.add_to_quarters = f"ON CONFLICT {self.quarter_key} DO UPDATE SET {_add_counts(quarters)}"
        self.add_to_hours = f"ON CONFLICT {self.hour_key} DO UPDATE SET {_add_counts(hours)}"
        replaced = ("seller_id", *_COUNT_COLUMNS) if per_code else _COUNT_COLUMNS
        self.replace = ", ".join(f"{c} = EXCLUDED.{c}" for c in replaced)
        self.group = ", ".join(str(i) for i in range(1, len(keys) + 3))  # owner, bucket and the keys
        self.seller = "min(seller_id), " if per_code else ""
        self.only = "" if per_code else "WHERE seller_id IS NOT NULL"  # a click on an unknown code has none
        self.sums = ", ".join([*(["min(seller_id)"] if per_code else []), *(f"sum({c})" for c in _COUNT_COLUMNS)])

    def count(self, source: str, bucket: str) -> str:
        """Counts of the clicks in `source` (as s: code, clicked_at, seller_id, reason and the
        dimensions) per owner, bucket and key."""
        keys = "".join(f"a.{k}, " for k in self.keys)
        only = self.only.replace("seller_id", "s.seller_id")
        return (f"SELECT s.{self.owner}, {bucket.format('s.clicked_at')}, {keys}{self.seller.replace('(', '(s.')}"
                f"count(*), count(*) FILTER (WHERE s.reason IS NULL), {_REASON_FILTERS} FROM {source} s "
                f"{self.per_row} {only} GROUP BY {self.group}")


def _add_counts(table: str) -> str:
    return ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in _COUNT_COLUMNS)


_REASON_FILTERS = ", ".join(f"count(*) FILTER (WHERE s.reason = '{r}')" for r in REASON_COLUMNS)
CLICK_ROLLUPS = _Rollup("click_rollups_15m", "click_rollups")
# Audience counts per seller, not per code: a seller's report by day and a dimension reads a row
# per hour and value however many codes it has. Per code they would cost more rows than the clicks
# themselves (a code has about one click per quarter hour in the 10M bench, and each click six
# dimensions); reports that combine a dimension with code keys read the clicks instead.
SELLER_AUDIENCE_ROLLUPS = _Rollup("seller_audience_15m", "seller_audience", ("dimension", "value"), _PER_AUDIENCE,
                                  owner="seller_id")
_ROLLUPS = (CLICK_ROLLUPS, SELLER_AUDIENCE_ROLLUPS)
# The 24 days (24 hours each, one starting on each UTC hour) that hold a time, with `_EVERY_HOUR`
# in the FROM clause: click_days (migration 0011) counts each click in all of them.
_DAY = "date_trunc('day', {0} - make_interval(hours => a), 'UTC') + make_interval(hours => a)"
_EVERY_HOUR = "CROSS JOIN generate_series(0, 23) AS a"
_INTO_DAYS = f"INSERT INTO click_days (day_start, code, seller_id, clicks, valid_clicks, {_COUNTS})"
_ADD_TO_DAYS = f"ON CONFLICT (day_start, code) DO UPDATE SET {_add_counts('click_days')}"
# Clicks not stored yet go in; the rollups count exactly those. Safe to repeat.
_MERGE = f"""
WITH new AS (
    INSERT INTO clicks ({_COLS}) SELECT {_COLS} FROM clicks_in ON CONFLICT DO NOTHING
    RETURNING code, clicked_at, seller_id, reason, referer, {", ".join(DIMENSIONS)}
), {", ".join(f'''
q{i} AS ({r.into_quarters} {r.count("new", _QUARTER)} {r.add_to_quarters}),
h{i} AS ({r.into_hours} {r.count("new", _HOUR)} {r.add_to_hours})''' for i, r in enumerate(_ROLLUPS))},
days AS ({_INTO_DAYS} SELECT {_DAY.format("s.clicked_at")}, s.code, min(s.seller_id), count(*),
         count(*) FILTER (WHERE s.reason IS NULL), {_REASON_FILTERS} FROM new s {_EVERY_HOUR} GROUP BY 1, 2
         {_ADD_TO_DAYS})
SELECT count(*) FROM new
"""


async def _staging(conn: asyncpg.Connection) -> None:
    if not await conn.fetchval("SELECT to_regclass('pg_temp.clicks_in') IS NOT NULL"):
        await conn.execute(
            f"CREATE TEMP TABLE clicks_in ON COMMIT DELETE ROWS AS SELECT {_COLS} FROM clicks WITH NO DATA"
        )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    # An async source: asyncpg reads a file-like one in a worker thread.
    yield data


_GIVEN_SUMS = ", ".join(["sum(n)", "coalesce(sum(n) FILTER (WHERE reason IS NULL), 0)",
                         *(f"coalesce(sum(n) FILTER (WHERE reason = '{r}'), 0)" for r in REASON_COLUMNS)])


def _add_rollups(*rollups: _Rollup, days: bool = False) -> str:
    """Counts given per (code, quarter hour as 'YYYY-MM-DDTHH:MM' in UTC, seller, reason, then the
    rollups' keys), added to each rollup's quarter-hour and hourly tables (and with `days`, to
    click_days)."""
    keys = "".join(f", {k}" for k in rollups[0].keys)
    n = len(rollups[0].keys)
    parts = []
    for i, r in enumerate(rollups):
        sums = f"{r.seller}{_GIVEN_SUMS}"
        parts.append(f"q{i} AS ({r.into_quarters} SELECT {r.owner}, quarter{keys}, {sums} FROM given {r.only} "
                     f"GROUP BY {r.group} {r.add_to_quarters})")
        parts.append(f"h{i} AS ({r.into_hours} SELECT {r.owner}, {_HOUR.format('quarter')}{keys}, {sums} "
                     f"FROM given {r.only} GROUP BY {r.group} {r.add_to_hours})")
    if days:
        parts.append(f"days AS ({_INTO_DAYS} SELECT {_DAY.format('quarter')}, code, min(seller_id), {_GIVEN_SUMS} "
                     f"FROM given {_EVERY_HOUR} GROUP BY 1, 2 {_ADD_TO_DAYS})")
    return f"""
WITH given AS (
    SELECT code, (quarter || ':00+00:00')::timestamptz AS quarter, seller_id, reason{keys}, n
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], {"".join(f"${5 + i}::text[], " for i in range(n))}
                ${5 + n}::bigint[]) AS t(code, quarter, seller_id, reason{keys}, n)
), {", ".join(parts)}
SELECT 1
"""


_ADD_CLICK_ROLLUPS = _add_rollups(CLICK_ROLLUPS, days=True)
_ADD_AUDIENCE_ROLLUPS = _add_rollups(SELLER_AUDIENCE_ROLLUPS)
_ESCAPED = re.compile(rb"\\(.?)")  # a lone backslash at the end matches too, and is refused
_UNESCAPED = {b"\\": b"\\", b"t": b"\t", b"n": b"\n", b"r": b"\r"}


def _unescaped(match: re.Match[bytes]) -> bytes:
    try:
        return _UNESCAPED[match.group(1)]
    except KeyError:  # an escape Click.row() never writes (\x41, octal, ...): Postgres reads it
        raise ValueError(match.group(0)) from None


def copy_value(field: bytes) -> str | None:
    """A field of COPY text as Click.row() wrote it, back to its value; ValueError otherwise."""
    if field == b"\\N":
        return None
    if b"\\" in field:
        field = _ESCAPED.sub(_unescaped, field)
    return field.decode()  # UnicodeDecodeError is a ValueError too


# A minute of the hour ('00'..'59') to its quarter hour's first minute.
_QUARTER_OF = {b"%02d" % m: b"%02d" % (m - m % 15) for m in range(60)}
Counts = list[list[Any]]  # columns, as _add_rollups' statements take them


def rollup_counts(rows: Sequence[bytes], columns: Sequence[str],
                  quarters: bool = False) -> tuple[Counts, Counts | None] | None:
    """The rows' counts per code, UTC hour ('YYYY-MM-DDTHH') or with `quarters` UTC quarter hour
    ('YYYY-MM-DDTHH:MM', as _add_rollups takes them), seller and reason; and when `columns`
    hold the audience dimensions, per those and each (dimension, value) too. None when a row is
    not written the way Click.row() writes it (time in UTC to the ms, UTF-8, its own escapes
    only): Postgres then reads such rows itself, and refuses them if they are garbled."""
    at, code, seller, reason = (columns.index(c) for c in ("clicked_at", "code", "seller_id", "reason"))
    # the dimensions' values of a row in one C call; the row is counted once per distinct key
    # and spread over the (dimension, value) pairs afterwards
    values = operator.itemgetter(*(columns.index(d) for d in DIMENSIONS)) if set(DIMENSIONS) <= set(columns) \
        else None
    per_key: Counter[tuple[Any, ...]] = Counter()
    for row in rows:
        fields = row.split(b"\t")
        if len(fields) != len(columns):
            return None
        clicked_at = fields[at]
        if len(clicked_at) != 29 or not clicked_at.endswith(b"+00:00") or not clicked_at.isascii():
            return None
        if quarters:
            first = _QUARTER_OF.get(clicked_at[14:16])
            if first is None:
                return None
            bucket = clicked_at[:14] + first
        else:
            bucket = clicked_at[:13]
        per_key[fields[code], bucket, fields[seller], fields[reason], values(fields) if values else None] += 1
    clicks: Counter[tuple[bytes, ...]] = Counter()
    pairs: Counter[tuple[bytes, ...]] = Counter()
    dimensions = [d.encode() for d in DIMENSIONS]
    for (*key, judged), n in per_key.items():
        clicks[tuple(key)] += n
        if judged is not None:
            for dimension, value in zip(dimensions, judged, strict=True):
                pairs[(b"\\N", *key[1:], dimension, value)] += n  # per seller: the code is not kept
    try:
        return _columns(clicks), (_columns(pairs) if values else None)
    except ValueError:
        return None


def _columns(counts: Counter[tuple[bytes, ...]]) -> Counts:
    """Counts keyed (code, bucket, seller, reason, *keys) as columns of values, n last."""
    width = len(next(iter(counts))) + 1 if counts else 5
    out: Counts = [[] for _ in range(width)]
    for key, n in counts.items():
        out[0].append(copy_value(key[0]))
        out[1].append(key[1].decode())
        for column, field in zip(out[2:-1], key[2:], strict=True):
            column.append(copy_value(field))
        out[-1].append(n)
    return out


async def write_rows(conn: asyncpg.Connection, rows: Sequence[bytes], columns: Sequence[str]) -> int:
    """Store clicks given as lines of COPY text (the click log's own format, so the writer
    never builds a click); returns how many were new.

    The usual batch is all new: it is COPYed straight into the table and its rollups added from
    the rows. A batch with a click already stored (delivered again after a writer died before
    acknowledging it) fails that COPY on the primary key and goes through a staging table
    instead, which inserts only the new clicks and counts exactly those: twice the work, for a
    rare case."""
    data = b"\n".join(rows) + b"\n"
    counts = rollup_counts(rows, columns, quarters=True)
    if counts is not None:
        clicks, audience = counts
        try:
            async with conn.transaction():
                await conn.copy_to_table("clicks", source=_once(data), columns=list(columns), format="text")
                await conn.execute(_ADD_CLICK_ROLLUPS, *clicks)
                if audience is not None:
                    await conn.execute(_ADD_AUDIENCE_ROLLUPS, *audience)
            return len(rows)
        except asyncpg.UniqueViolationError:
            pass
    async with conn.transaction():
        await _staging(conn)
        await conn.copy_to_table("clicks_in", source=_once(data), columns=list(columns), format="text")
        inserted: int = await conn.fetchval(_MERGE)
    return inserted


# Writers judge repeats one commit at a time: two batches holding a device's first click and
# its repeat, committed at once, would each find no earlier click. (Any fixed number will do.)
JUDGEMENT_LOCK = 0x6D636B6A75

# The valid clicks and repeats of some (code, device) pairs within a time range: the writer's
# evidence for judging repeats (the hash index clicks_device on the device).
_AROUND = """
SELECT c.code, c.device_hash, c.click_id, c.clicked_at, c.reason, c.original_click_id
FROM unnest($1::text[], $2::text[]) AS k(code, device_hash)
CROSS JOIN LATERAL (
    SELECT * FROM clicks c
    WHERE c.code = k.code AND c.device_hash = k.device_hash AND (c.reason IS NULL OR c.reason = 'ERR_DUP')
      AND c.clicked_at >= $3 AND c.clicked_at <= $4
    OFFSET 0  -- a probe of the index per pair: a fresh day's partition has no statistics yet, and
              -- the planner would otherwise scan every click in the range and hash them
) c
"""


async def lock_judgement(conn: asyncpg.Connection, exclusive: bool) -> None:
    """Held until the transaction ends."""
    if exclusive:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", JUDGEMENT_LOCK)
    else:
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", JUDGEMENT_LOCK)


async def around(conn: asyncpg.Connection, pairs: Sequence[tuple[str, str]], start: datetime,
                 end: datetime) -> list[asyncpg.Record]:
    codes, devices = zip(*pairs, strict=True) if pairs else ((), ())
    rows: list[asyncpg.Record] = await conn.fetch(_AROUND, list(codes), list(devices), start, end)
    return rows


# Counts moved between valid and ERR_DUP per code and quarter hour, in both click rollups.
_MOVE_COUNTS = f"""
WITH moves AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[]) AS d(code, quarter, n)
), hours AS (
    UPDATE click_rollups r SET valid_clicks = r.valid_clicks + h.n, "ERR_DUP" = r."ERR_DUP" - h.n
    FROM (SELECT code, {_HOUR.format("quarter")} AS hour, sum(n) AS n FROM moves GROUP BY 1, 2) AS h
    WHERE r.code = h.code AND r.hour = h.hour
), days AS (
    UPDATE click_days r SET valid_clicks = r.valid_clicks + h.n, "ERR_DUP" = r."ERR_DUP" - h.n
    FROM (SELECT code, {_DAY.format("quarter")} AS day_start, sum(n) AS n FROM moves {_EVERY_HOUR} GROUP BY 1, 2) AS h
    WHERE r.code = h.code AND r.day_start = h.day_start
)
UPDATE click_rollups_15m r SET valid_clicks = r.valid_clicks + d.n, "ERR_DUP" = r."ERR_DUP" - d.n
FROM moves d WHERE r.code = d.code AND r.quarter = d.quarter
"""


# The same in the seller audience rollups, per each moved click's (dimension,
# value) as stored with it.
_MOVE_AUDIENCE = f"""
WITH moves AS (
    SELECT s.seller_id, {_QUARTER.format("s.clicked_at")} AS quarter, a.dimension, a.value, sum(m.n) AS n
    FROM unnest($1::text[], $2::timestamptz[], $3::bigint[]) AS m(click_id, clicked_at, n)
    JOIN clicks s ON s.click_id = m.click_id AND s.clicked_at = m.clicked_at
    {_PER_AUDIENCE}
    WHERE s.seller_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
), hours AS (
    UPDATE seller_audience r SET valid_clicks = r.valid_clicks + h.n, "ERR_DUP" = r."ERR_DUP" - h.n
    FROM (SELECT seller_id, {_HOUR.format("quarter")} AS hour, dimension, value, sum(n) AS n FROM moves
          GROUP BY 1, 2, 3, 4) AS h
    WHERE r.seller_id = h.seller_id AND r.hour = h.hour AND r.dimension = h.dimension AND r.value = h.value
)
UPDATE seller_audience_15m r SET valid_clicks = r.valid_clicks + d.n, "ERR_DUP" = r."ERR_DUP" - d.n
FROM moves d
WHERE r.seller_id = d.seller_id AND r.quarter = d.quarter AND r.dimension = d.dimension AND r.value = d.value
"""


def quarter_of(at: datetime) -> datetime:
    """The start of the UTC quarter hour holding `at`."""
    at = at.astimezone(UTC)
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


async def change_verdicts(conn: asyncpg.Connection,
                          changes: Sequence[tuple[str, datetime, str, bool, str | None]]) -> None:
    """Stored clicks (id, time, code, valid until now, new first click id or None for valid)
    whose verdict changes; their rollups (quarter-hour and hourly, plain and audience) move with them."""
    await conn.execute(
        """
        UPDATE clicks c SET reason = CASE WHEN t.original IS NULL THEN NULL ELSE 'ERR_DUP' END,
                            original_click_id = t.original
        FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS t(click_id, clicked_at, original)
        WHERE c.click_id = t.click_id AND c.clicked_at = t.clicked_at
        """,
        [c[0] for c in changes], [c[1] for c in changes], [c[4] for c in changes],
    )
    moves: Counter[tuple[str, datetime]] = Counter()
    for _, at, code, was_valid, original in changes:  # +1: one more valid click and one repeat less
        moves[code, quarter_of(at)] += (original is None) - was_valid
    moved = [(code, quarter, n) for (code, quarter), n in moves.items() if n]
    if moved:
        await conn.execute(_MOVE_COUNTS, *(list(column) for column in zip(*moved, strict=True)))
    each = [(click_id, at, (original is None) - was_valid) for click_id, at, _, was_valid, original in changes]
    each = [change for change in each if change[2]]
    if each:
        await conn.execute(_MOVE_AUDIENCE, *(list(column) for column in zip(*each, strict=True)))


async def write_batch(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> int:
    """Store clicks given as tuples (columns COLUMNS); returns how many were new."""
    if not records:
        return 0
    async with conn.transaction():
        await _staging(conn)
        await conn.copy_records_to_table("clicks_in", records=records, columns=COLUMNS)
        inserted: int = await conn.fetchval(_MERGE)
    return inserted


async def recount_rollups(conn: asyncpg.Connection, since: datetime | None = None) -> None:
    """Count the rollups again from the clicks (after a bulk load that bypassed the writer, or
    writers that ran an older version), from `since` on or over all time.

    The clicks win wherever they are kept: each quarter hour that has clicks is counted again.
    A quarter hour whose clicks are gone (dropped by retention) keeps its counts, which are then
    the only record of them. Hourly rows are summed again from their quarters. Writers wait
    meanwhile (the tables are held in SHARE mode), so nothing is counted twice or missed."""
    if since is not None:
        since = quarter_of(since)  # whole quarter hours only: a part would replace the whole
    bounds = "TRUE" if since is None else "clicked_at >= $1"
    source = f"(SELECT code, clicked_at, seller_id, reason, referer, {', '.join(DIMENSIONS)} FROM clicks " \
             f"WHERE {bounds})"
    args = () if since is None else (since,)
    tables = ", ".join([*(t for r in _ROLLUPS for t in (r.hours, r.quarters)), "click_days"])
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE clicks, {tables} IN SHARE MODE")
        # an audience value no longer among a quarter's clicks must not keep its old count
        await conn.execute(f"DELETE FROM seller_audience_15m a USING (SELECT DISTINCT seller_id, "
                           f"{_QUARTER.format('clicked_at')} AS quarter FROM {source} k) k "
                           "WHERE a.seller_id = k.seller_id AND a.quarter = k.quarter", *args)
        for rollup in _ROLLUPS:
            await conn.execute(f"{rollup.into_quarters} {rollup.count(source, _QUARTER)} "
                               f"ON CONFLICT {rollup.quarter_key} DO UPDATE SET {rollup.replace}", *args)
            keys = "".join(f", {k}" for k in rollup.keys)
            if since is None:
                await conn.execute(f"TRUNCATE {rollup.hours}")
                quarters = rollup.quarters
            else:
                await conn.execute(f"DELETE FROM {rollup.hours} WHERE hour >= {_HOUR.format('$1::timestamptz')}",
                                   since)
                quarters = f"{rollup.quarters} WHERE quarter >= {_HOUR.format('$1::timestamptz')}"
            await conn.execute(f"{rollup.into_hours} SELECT {rollup.owner}, {_HOUR.format('quarter')}{keys}, "
                               f"{rollup.sums} FROM {quarters} GROUP BY {rollup.group}", *args)
        # the days that hold a recounted quarter: those starting from 23 hours before its hour on
        lower = None if since is None else since.replace(minute=0) - timedelta(hours=23)
        if lower is None:
            await conn.execute("TRUNCATE click_days")
        else:
            await conn.execute("DELETE FROM click_days WHERE day_start >= $1", lower)
        await conn.execute(
            f"{_INTO_DAYS} SELECT * FROM (SELECT {_DAY.format('quarter')} AS day_start, code, {CLICK_ROLLUPS.sums} "
            f"FROM click_rollups_15m {_EVERY_HOUR} {'' if lower is None else 'WHERE quarter >= $1'} GROUP BY 1, 2) d "
            f"{'' if lower is None else 'WHERE day_start >= $1'}", *(() if lower is None else (lower,)))


async def find_click(conn: asyncpg.Connection, click_id: str, clicked_at: datetime) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM clicks WHERE click_id = $1 AND clicked_at = $2", click_id, clicked_at
    )
    return dict(row) if row else None
