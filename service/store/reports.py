"""SQL of the reports: clicks, carts and orders grouped by their click's day and code attributes.

Group keys are chosen from a fixed list (never from the request's text), so the SQL below is
assembled only from these names; every value travels as a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from service.audience import DIMENSIONS, UNKNOWN
from service.store.clicks import REASON_COLUMNS

REASONS = REASON_COLUMNS  # one count column per invalid reason, as the rollups have them
# group key -> SQL over the fact table `f` (clicks, rollups, carts or orders) and its code `d`
KEYS = {
    "day": "(f.{time} AT TIME ZONE {tz})::date",
    "code": "f.code",
    "utm_source": "d.utm_source",
    "utm_medium": "d.utm_medium",
    "utm_campaign": "d.utm_campaign",
    "utm_content": "d.utm_content",
    "channel": "d.channel",
}
# Judged once per click by the writer and kept with it (service/audience.py); a report groups by
# at most one of them. Clicks, orders and carts stored before they were judged count as unknown.
AUDIENCE = DIMENSIONS
KEYS |= {d: f"coalesce(f.{d}, '{UNKNOWN[d]}')" for d in AUDIENCE}


class _Query:
    """Numbers the parameters of one grouped query over a fact table."""

    def __init__(self, keys: Sequence[str], seller_id: str | None, start: datetime, end: datetime, tz: str,
                 time: str = "clicked_at") -> None:
        self.args: list[Any] = [start, end]
        where = [f"f.{time} >= $1", f"f.{time} < $2"]
        if seller_id is not None:
            self.args.append(seller_id)
            where.append(f"f.seller_id = ${len(self.args)}")
        tz_param = ""
        if "day" in keys:
            self.args.append(tz)
            tz_param = f"${len(self.args)}"
        self.where = " AND ".join(where)
        self.columns = "".join(f"{KEYS[k].format(tz=tz_param, time=time)} AS {k}, " for k in keys)
        positions = [str(i) for i in range(1, len(keys) + 1)]
        self.positions = positions

    def param(self, value: Any) -> str:
        """One more parameter; returns its placeholder."""
        self.args.append(value)
        return f"${len(self.args)}"

    def group(self, *extra: str) -> str:
        items = self.positions + list(extra)
        return f"GROUP BY {', '.join(items)}" if items else ""

    async def fetch(self, conn: asyncpg.Connection, select: str, table: str, condition: str = "",
                    *extra_group: str, codes: bool = True) -> list[dict[str, Any]]:
        """`select` per group from `table` (as f, its code's row as d unless not `codes`), within
        the period and seller."""
        where = f"{condition} AND {self.where}" if condition else self.where
        sql = f"""
            SELECT {self.columns} {select}
            FROM {table} f {"LEFT JOIN codes d ON d.code = f.code" if codes else ""}
            WHERE {where}
            {self.group(*extra_group)}
        """
        return [dict(r) for r in await conn.fetch(sql, *self.args)]


async def click_counts(conn: asyncpg.Connection, keys: Sequence[str], seller_id: str | None,
                       start: datetime, end: datetime, tz: str) -> list[dict[str, Any]]:
    """From the clicks themselves, for days whose bounds no rollup lines up with (see day_plan),
    and for an audience dimension with code keys: exact only where the clicks are still kept
    (retention drops them)."""
    q = _Query(keys, seller_id, start, end, tz)
    reasons = ", ".join(f"count(*) FILTER (WHERE f.reason = '{r}') AS \"{r}\"" for r in REASONS)
    counts = f"count(*) AS clicks, count(*) FILTER (WHERE f.reason IS NULL) AS valid_clicks, {reasons}"
    return await q.fetch(conn, counts, "clicks")


_COUNTED = ("code", "seller_id", "clicks", "valid_clicks", *(f'"{r}"' for r in REASONS))


def from_audience_rollups(keys: Sequence[str]) -> bool:
    """Whether audience_click_counts answers this grouping: `day` and one dimension at most (the
    audience rollups are per seller; with code keys the clicks themselves are read)."""
    return set(keys) <= {"day", *AUDIENCE} and len(set(keys) & set(AUDIENCE)) == 1


async def audience_click_counts(conn: asyncpg.Connection, keys: Sequence[str], seller_id: str | None,
                                start: datetime, end: datetime, tz: str,
                                cut_hours: Sequence[datetime] = ()) -> list[dict[str, Any]]:
    """From the seller audience rollups (see from_audience_rollups), exact in any time zone whose
    days begin on UTC quarter hours: hourly rows for the hours within one local day, quarter-hour
    rows for `cut_hours`, the UTC hours that a day's start cuts (every hour holding a day start,
    `start` or `end` off the hour). Rollups outlive the clicks, so days that retention dropped
    are counted too. Clicks on unknown codes (no seller) are not among them."""
    q = _Query(keys, seller_id, start, end, tz, time="at")
    [dimension] = [k for k in keys if k in AUDIENCE]
    counted = ", ".join([c for c in _COUNTED if c != "code"] + [f"value AS {dimension}"])
    only = f"dimension = {q.param(dimension)}"
    if cut_hours:
        cuts = q.param(list(cut_hours))
        # the quarters themselves, so that the index finds each one (a range join per hour would
        # have the planner read every quarter row of the period and filter)
        cut_quarters = q.param([hour + timedelta(minutes=m) for hour in cut_hours for m in (0, 15, 30, 45)])
        table = f"""(
            SELECT hour AS at, {counted} FROM seller_audience WHERE {only} AND hour <> ALL({cuts}::timestamptz[])
            UNION ALL
            SELECT quarter AS at, {counted} FROM seller_audience_15m
            WHERE {only} AND quarter = ANY({cut_quarters}::timestamptz[])
        )"""
    else:
        table = f"(SELECT hour AS at, {counted} FROM seller_audience WHERE {only})"
    counts = ", ".join(f'coalesce(sum(f."{c}"), 0)::bigint AS "{c}"' for c in ("clicks", "valid_clicks", *REASONS))
    return await q.fetch(conn, counts, table, codes=False)


@dataclass(frozen=True)
class DayPlan:
    """Rollup rows to read for a report's local days (service/reports.py day_plan): click_days
    rows (day start, local day), and hourly and quarter-hour rows (start, local day, sign)."""

    days: tuple[tuple[datetime, date], ...]
    hours: tuple[tuple[datetime, date, int], ...]
    quarters: tuple[tuple[datetime, date, int], ...]


async def day_rollup_counts(conn: asyncpg.Connection, keys: Sequence[str], seller_id: str | None,
                            plan: DayPlan) -> list[dict[str, Any]]:
    """Click counts per group from the rollup rows of `plan`, each row counted into its local day
    with its sign: a 30-day report reads about 30 rows per code."""
    args: list[Any] = []

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    seller = f" AND f.seller_id = {param(seller_id)}" if seller_id is not None else ""
    counted = ", ".join(f'f."{c}"' for c in ("clicks", "valid_clicks", *REASONS))
    parts = []
    for table, column, rows in (("click_days", "day_start", [(*r, 1) for r in plan.days]),
                                ("click_rollups", "hour", plan.hours), ("click_rollups_15m", "quarter", plan.quarters)):
        if rows:
            at, day, sign = (param(list(column_)) for column_ in zip(*rows, strict=True))
            parts.append(f"SELECT b.local_day, b.sign, f.code, {counted} "
                         f"FROM unnest({at}::timestamptz[], {day}::date[], {sign}::int[]) AS b(at, local_day, sign) "
                         f"JOIN {table} f ON f.{column} = b.at{seller}")
    if not parts:
        return []
    columns = "".join(f"{'f.local_day' if k == 'day' else KEYS[k]} AS {k}, " for k in keys)
    sums = ", ".join(f'coalesce(sum(f.sign * f."{c}"), 0)::bigint AS "{c}"'
                     for c in ("clicks", "valid_clicks", *REASONS))
    group = f"GROUP BY {', '.join(str(i) for i in range(1, len(keys) + 1))}" if keys else ""
    sql = f"""
        SELECT {columns} {sums}
        FROM ({" UNION ALL ".join(parts)}) f LEFT JOIN codes d ON d.code = f.code
        {group}
    """
    # a group whose rows cancel out (counted in a day, taken off its quarters) had no click
    return [dict(r) for r in await conn.fetch(sql, *args) if r["clicks"]]


async def cart_counts(conn: asyncpg.Connection, keys: Sequence[str], seller_id: str | None,
                      start: datetime, end: datetime, tz: str) -> list[dict[str, Any]]:
    q = _Query(keys, seller_id, start, end, tz)
    return await q.fetch(conn, "count(*) AS carts", "carts", "f.counted")


async def order_sums(conn: asyncpg.Connection, keys: Sequence[str], seller_id: str | None,
                     start: datetime, end: datetime, tz: str) -> list[dict[str, Any]]:
    """Per group and currency: orders, paid orders, GMV, payable and pending commission."""
    q = _Query(keys, seller_id, start, end, tz)
    sums = """
        f.currency AS currency, count(*) AS orders, count(*) FILTER (WHERE f.paid_at IS NOT NULL) AS paid_orders,
        sum(f.amount - f.refunded) AS gmv,
        coalesce(sum(f.commission) FILTER (WHERE f.commission_status = 'payable'), 0) AS commission,
        coalesce(sum(f.commission) FILTER (WHERE f.commission_status = 'pending'), 0) AS pending_commission
    """
    return await q.fetch(conn, sums, "orders", "f.attributed", "f.currency")


async def invalid_clicks(conn: asyncpg.Connection, seller_id: str | None, start: datetime, end: datetime,
                         reason: str | None, after: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT click_id, clicked_at, code, reason, ip, user_agent, referer, original_click_id
        FROM clicks
        WHERE reason IS NOT NULL AND clicked_at >= $1 AND clicked_at < $2
          AND ($3::text IS NULL OR seller_id = $3)
          AND ($4::text IS NULL OR reason = $4)
          AND ($5::timestamptz IS NULL OR (clicked_at, click_id) < ($5, $6))
        ORDER BY clicked_at DESC, click_id DESC
        LIMIT $7
        """,
        start, end, seller_id, reason, after[0] if after else None, after[1] if after else None, limit,
    )
    return [dict(r) for r in rows]
