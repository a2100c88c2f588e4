"""SQL for the clicks table: day partitions, idempotent batch writes, look-ups by click id."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

COLUMNS = (
    "click_id", "clicked_at", "code", "seller_id", "product_id", "reason",
    "device_hash", "ip", "user_agent", "referer", "original_click_id",
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
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF clicks "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
            )
            made.append(name)
        except asyncpg.CheckViolationError:
            pass  # the default partition already holds rows of that day; they stay there
        except asyncpg.DuplicateTableError:
            pass  # another writer made it first
    return made


# Every invalid reason, in the SPEC's order: one count column each in click_rollups and reports.
REASON_COLUMNS = ("ERR_400", "ERR_403", "ERR_404", "ERR_410", "ERR_PREFETCH", "ERR_BOT", "ERR_DUP")
_COUNTS = ", ".join(f'"{r}"' for r in REASON_COLUMNS)
_ADD_COUNTS = ", ".join(
    f'{c} = click_rollups.{c} + EXCLUDED.{c}' for c in ("clicks", "valid_clicks", *(f'"{r}"' for r in REASON_COLUMNS))
)
_REASON_FILTERS = ", ".join(f"count(*) FILTER (WHERE reason = '{r}')" for r in REASON_COLUMNS)
# Clicks not stored yet go in; the hourly rollups count exactly those. Safe to repeat.
_MERGE = f"""
WITH new AS (
    INSERT INTO clicks ({_COLS}) SELECT {_COLS} FROM clicks_in ON CONFLICT DO NOTHING
    RETURNING code, clicked_at, seller_id, reason
), counted AS (
    INSERT INTO click_rollups (code, hour, seller_id, clicks, valid_clicks, {_COUNTS})
    SELECT code, date_trunc('hour', clicked_at, 'UTC'), min(seller_id), count(*),
           count(*) FILTER (WHERE reason IS NULL), {_REASON_FILTERS}
    FROM new GROUP BY 1, 2
    ON CONFLICT (code, hour) DO UPDATE SET {_ADD_COUNTS}
)
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


# Counts given per (code, hour as 'YYYY-MM-DDTHH' in UTC, seller, reason), added to the rollups.
_ADD_ROLLUPS = f"""
INSERT INTO click_rollups (code, hour, seller_id, clicks, valid_clicks, {_COUNTS})
SELECT code, (hour || ':00:00+00:00')::timestamptz, min(seller_id), sum(n),
       coalesce(sum(n) FILTER (WHERE reason IS NULL), 0),
       {", ".join(f"coalesce(sum(n) FILTER (WHERE reason = '{r}'), 0)" for r in REASON_COLUMNS)}
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS t(code, hour, seller_id, reason, n)
GROUP BY 1, 2
ON CONFLICT (code, hour) DO UPDATE SET {_ADD_COUNTS}
"""
_ESCAPED = re.compile(rb"\\(.?)")  # a lone backslash at the end matches too, and is refused
_UNESCAPED = {b"\\": b"\\", b"t": b"\t", b"n": b"\n", b"r": b"\r"}


def _unescaped(match: re.Match[bytes]) -> bytes:
    try:
        return _UNESCAPED[match.group(1)]
    except KeyError:  # an escape Click.row() never writes (\x41, octal, ...): Postgres reads it
        raise ValueError(match.group(0)) from None


def _copy_value(field: bytes) -> str | None:
    """A field of COPY text as Click.row() wrote it, back to its value; ValueError otherwise."""
    if field == b"\\N":
        return None
    if b"\\" in field:
        field = _ESCAPED.sub(_unescaped, field)
    return field.decode()  # UnicodeDecodeError is a ValueError too


def rollup_counts(rows: Sequence[bytes], columns: Sequence[str]) -> list[list[Any]] | None:
    """The rows' counts per code, UTC hour, seller and reason, as the columns of _ADD_ROLLUPS;
    None when a row is not written the way Click.row() writes it (time in UTC to the ms, UTF-8,
    its own escapes only): Postgres then reads such rows itself, and refuses them if they are
    garbled."""
    at, code, seller, reason = (columns.index(c) for c in ("clicked_at", "code", "seller_id", "reason"))
    counts: Counter[tuple[bytes, bytes, bytes, bytes]] = Counter()
    for row in rows:
        fields = row.split(b"\t")
        if len(fields) != len(columns):
            return None
        clicked_at = fields[at]
        if len(clicked_at) != 29 or not clicked_at.endswith(b"+00:00") or not clicked_at.isascii():
            return None
        counts[fields[code], clicked_at[:13], fields[seller], fields[reason]] += 1
    out: list[list[Any]] = [[], [], [], [], []]
    try:
        for (code_, hour, seller_, reason_), n in counts.items():
            for column, value in zip(out, (_copy_value(code_), hour.decode(), _copy_value(seller_),
                                           _copy_value(reason_), n), strict=True):
                column.append(value)
    except ValueError:
        return None
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
    counts = rollup_counts(rows, columns)
    if counts is not None:
        try:
            async with conn.transaction():
                await conn.copy_to_table("clicks", source=_once(data), columns=list(columns), format="text")
                await conn.execute(_ADD_ROLLUPS, *counts)
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


async def change_verdicts(conn: asyncpg.Connection,
                          changes: Sequence[tuple[str, datetime, str, bool, str | None]]) -> None:
    """Stored clicks (id, time, code, valid until now, new first click id or None for valid)
    whose verdict changes; their hourly rollups move with them."""
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
        moves[code, at.replace(minute=0, second=0, microsecond=0)] += (original is None) - was_valid
    await conn.execute(
        """
        UPDATE click_rollups r SET valid_clicks = r.valid_clicks + d.n, "ERR_DUP" = r."ERR_DUP" - d.n
        FROM unnest($1::text[], $2::timestamptz[], $3::bigint[]) AS d(code, hour, n)
        WHERE r.code = d.code AND r.hour = d.hour
        """,
        [k[0] for k in moves], [k[1] for k in moves], list(moves.values()),
    )


async def write_batch(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> int:
    """Store clicks given as tuples (columns COLUMNS); returns how many were new."""
    if not records:
        return 0
    async with conn.transaction():
        await _staging(conn)
        await conn.copy_records_to_table("clicks_in", records=records, columns=COLUMNS)
        inserted: int = await conn.fetchval(_MERGE)
    return inserted


async def recount_rollups(conn: asyncpg.Connection) -> None:
    """Rebuild click_rollups from the clicks (after a bulk load that bypassed write_batch)."""
    async with conn.transaction():
        await conn.execute("TRUNCATE click_rollups")
        await conn.execute(
            f"""
            INSERT INTO click_rollups (code, hour, seller_id, clicks, valid_clicks, {_COUNTS})
            SELECT code, date_trunc('hour', clicked_at, 'UTC'), min(seller_id), count(*),
                   count(*) FILTER (WHERE reason IS NULL), {_REASON_FILTERS}
            FROM clicks GROUP BY 1, 2
            """
        )


async def find_click(conn: asyncpg.Connection, click_id: str, clicked_at: datetime) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM clicks WHERE click_id = $1 AND clicked_at = $2", click_id, clicked_at
    )
    return dict(row) if row else None
