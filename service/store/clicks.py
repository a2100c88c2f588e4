"""SQL for the clicks table: day partitions, idempotent batch writes, look-ups by click id."""

from __future__ import annotations

from collections.abc import Sequence
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


async def write_batch(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> int:
    """Insert clicks that are not there yet; returns how many were new. Safe to repeat.

    The usual batch is new and goes straight in with COPY; a batch written before (a writer
    that died between commit and acknowledgement) goes through ON CONFLICT DO NOTHING instead.
    """
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("clicks", records=records, columns=COLUMNS)
        return len(records)
    except asyncpg.UniqueViolationError:
        pass
    async with conn.transaction():
        if not await conn.fetchval("SELECT to_regclass('pg_temp.clicks_in') IS NOT NULL"):
            await conn.execute(
                f"CREATE TEMP TABLE clicks_in ON COMMIT DELETE ROWS AS SELECT {_COLS} FROM clicks WITH NO DATA"
            )
        await conn.copy_records_to_table("clicks_in", records=records, columns=COLUMNS)
        status = await conn.execute(
            f"INSERT INTO clicks ({_COLS}) SELECT {_COLS} FROM clicks_in ON CONFLICT DO NOTHING"
        )
    return int(status.rsplit(" ", 1)[1])


async def find_click(conn: asyncpg.Connection, click_id: str, clicked_at: datetime) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM clicks WHERE click_id = $1 AND clicked_at = $2", click_id, clicked_at
    )
    return dict(row) if row else None


async def count_clicks(conn: asyncpg.Connection, click_ids: Sequence[str]) -> int:
    value: int = await conn.fetchval("SELECT count(*) FROM clicks WHERE click_id = ANY($1::text[])", list(click_ids))
    return value
