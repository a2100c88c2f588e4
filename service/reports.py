"""Traffic and invalid-click reports (JSON or CSV)."""

from __future__ import annotations

import csv
import functools
import io
import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import Response

from service.api import ApiResponse, encode_cursor, keyset_cursor, limit_param
from service.catalog import ctx_of, principal
from service.errors import invalid
from service.events import round_money
from service.store import reports as sql

MAX_DAYS = 366
DEFAULT_DAYS = 30
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
MONEY = ("gmv", "commission", "pending_commission")
SCALARS = ("clicks", "valid_clicks", "carts", "orders", "paid_orders", "conversion_rate")


async def _seller_scope(request: Request) -> str | None:
    """The seller to report on: a seller key's own; an admin's choice, or every seller."""
    who = await principal(request)
    seller_id = request.query_params.get("seller_id") or who.seller_id
    if seller_id is not None:
        who.require_seller(seller_id)
    return seller_id


def _day(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        if not _DATE_RE.fullmatch(raw):
            raise ValueError(raw)
        day = date.fromisoformat(raw)
        if not 1970 <= day.year <= 9998:
            raise ValueError(raw)
        return day
    except ValueError:
        raise invalid({name: "a date as YYYY-MM-DD"}) from None


def _days(request: Request, tz: ZoneInfo) -> tuple[date, date]:
    """The inclusive local days `from`..`to`."""
    today = datetime.now(tz).date()
    to = _day(request, "to", today)
    start_day = _day(request, "from", to - timedelta(days=DEFAULT_DAYS - 1))
    if start_day > to:
        raise invalid({"from": "must not be after 'to'"})
    if (to - start_day).days + 1 > MAX_DAYS:
        raise invalid({"to": f"at most {MAX_DAYS} days from 'from'"})
    return start_day, to


def _day_start(day: date, tz: ZoneInfo, fold: int = 0) -> datetime:
    return datetime.combine(day, time(0, fold=fold), tz).astimezone(UTC)


def _period(request: Request, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) in UTC for the inclusive local days `from`..`to`."""
    first, last = _days(request, tz)
    return _day_start(first, tz), _day_start(last + timedelta(days=1), tz)


def _on_quarter_hour(at: datetime) -> bool:
    return at.minute % 15 == at.second == at.microsecond == 0


@functools.lru_cache(maxsize=512)
def cut_hours(tz: ZoneInfo, first: date, last: date) -> tuple[datetime, ...] | None:
    """The UTC hours (their starts) that the local days `first`..`last` do not fill whole: those
    in which the local date changes off the hour (Asia/Kolkata: 18:00 UTC, its midnight being
    18:30). None when the date changes off a UTC quarter hour somewhere in the period (offsets
    that are not multiples of 15 minutes: Africa/Monrovia before 1972; the 00:01 clock changes
    of America/St_Johns until 2011): then no rollup lines up with the days.

    The local date changes only at a local midnight or at a change of offset. Every local
    midnight is a day start as zoneinfo gives it (a midnight repeated by a fall-back gives both
    folds); offset changes are found between consecutive day starts to the second (no zone
    changes its offset twice within a day)."""
    start, end = _day_start(first, tz), _day_start(last + timedelta(days=1), tz)
    starts = sorted({_day_start(first + timedelta(days=i), tz, fold)
                     for i in range((last - first).days + 2) for fold in (0, 1)})
    changes = {at for at in starts if start <= at <= end}

    def offset(second: int) -> timedelta | None:
        return datetime.fromtimestamp(second, tz).utcoffset()

    for a, b in itertools.pairwise(starts):
        lo, hi = int(a.timestamp()), int(b.timestamp())
        if offset(lo) == offset(hi):
            continue
        while hi - lo > 1:  # hi: the first second of the new offset
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
        changed = datetime.fromtimestamp(hi, UTC)
        if start <= changed <= end:
            changes.add(changed)
    if not all(_on_quarter_hour(at) for at in changes):
        return None
    return tuple(sorted({at.replace(minute=0) for at in changes if at.minute}))


_QUARTER = timedelta(minutes=15)


@functools.lru_cache(maxsize=512)
def day_plan(tz: ZoneInfo, first: date, last: date) -> sql.DayPlan:
    """The rollup rows that make the local days `first`..`last` exactly, each with its local day
    and a sign: for a day of 24 hours at one offset, the click_days row starting on the UTC hour
    of its midnight, less the quarter hours before its midnight and plus those after its end (a
    half-hour zone: two each); for any other day (a change of offset), its quarter hours dated one
    by one as the clicks themselves would be, four of one date making an hourly row. Only for
    zones whose days begin on UTC quarter hours (cut_hours is not None)."""
    days: list[tuple[datetime, date]] = []
    hours: list[tuple[datetime, date, int]] = []
    quarters: list[tuple[datetime, date, int]] = []
    rest: list[tuple[datetime, datetime]] = []  # spans of [start, end) left to date quarter by quarter
    cursor = _day_start(first, tz)
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        start, end = _day_start(day, tz), _day_start(day + timedelta(days=1), tz)
        regular = end - start == timedelta(hours=24) and datetime.fromtimestamp(start.timestamp(), tz).utcoffset() \
            == datetime.fromtimestamp(end.timestamp() - 1, tz).utcoffset()
        if not regular or start < cursor:
            continue
        if cursor < start:
            rest.append((cursor, start))
        bucket = start.replace(minute=0)
        days.append((bucket, day))
        quarters += [(bucket + k * _QUARTER, day, -1) for k in range((start - bucket) // _QUARTER)]
        quarters += [(bucket + timedelta(hours=24) + k * _QUARTER, day, 1) for k in range((start - bucket) // _QUARTER)]
        cursor = end
    if cursor < (stop := _day_start(last + timedelta(days=1), tz)):
        rest.append((cursor, stop))
    for span_start, span_end in rest:
        at = span_start
        while at < span_end:
            dated = datetime.fromtimestamp(at.timestamp(), tz).date()
            whole_hour = at.minute == 0 and at + timedelta(hours=1) <= span_end and all(
                datetime.fromtimestamp((at + k * _QUARTER).timestamp(), tz).date() == dated for k in range(4))
            if first <= dated <= last:
                if whole_hour:
                    hours.append((at, dated, 1))
                else:
                    quarters.append((at, dated, 1))
            at += timedelta(hours=1) if whole_hour else _QUARTER
    return sql.DayPlan(tuple(days), tuple(hours), tuple(quarters))


def _zone(request: Request) -> ZoneInfo:
    name = request.query_params.get("tz") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise invalid({"tz": "an IANA time zone such as Europe/Moscow or Asia/Shanghai"}) from None


def _group_by(request: Request) -> list[str]:
    raw = request.query_params.get("group_by", "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    unknown = [k for k in keys if k not in sql.KEYS]
    if unknown:
        raise invalid({"group_by": f"unknown {', '.join(unknown)}; choose from {', '.join(sql.KEYS)}"})
    if len(set(keys) & set(sql.AUDIENCE)) > 1:
        raise invalid({"group_by": f"at most one of {', '.join(sql.AUDIENCE)}"})
    return list(dict.fromkeys(keys))


def _empty(keys: list[str], key: tuple[Any, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in zip(keys, key, strict=True)}
    row |= {"clicks": 0, "valid_clicks": 0, "invalid_clicks": dict.fromkeys(sql.REASONS, 0), "carts": 0,
            "orders": 0, "paid_orders": 0, "conversion_rate": 0.0}
    row |= {m: {} for m in MONEY}
    return row


async def traffic_rows(request: Request) -> tuple[list[str], list[dict[str, Any]]]:
    ctx = ctx_of(request)
    seller_id = await _seller_scope(request)
    tz = _zone(request)
    first, last = _days(request, tz)
    start, end = _day_start(first, tz), _day_start(last + timedelta(days=1), tz)
    keys = _group_by(request)
    args = (keys, seller_id, start, end, tz.key)
    # Every zone's days begin on UTC quarter hours today: the rollups answer exactly (hourly rows,
    # and quarter-hour rows for the hours a local midnight cuts), also for days whose clicks
    # retention dropped. The clicks themselves only for historic offsets that no rollup fits.
    # Without an audience key, whole days come from click_days (a row per code and day); a
    # dimension by day from the seller audience rollups; a dimension with code keys from the clicks.
    cuts = cut_hours(tz, first, last)
    audience = bool(set(keys) & set(sql.AUDIENCE))
    async with ctx.pool.acquire() as conn:
        if cuts is None or (audience and not sql.from_audience_rollups(keys)):
            clicks = await sql.click_counts(conn, *args)
        elif audience:
            clicks = await sql.audience_click_counts(conn, *args, cut_hours=cuts)
        else:
            clicks = await sql.day_rollup_counts(conn, keys, seller_id, day_plan(tz, first, last))
        carts = await sql.cart_counts(conn, *args)
        orders = await sql.order_sums(conn, *args)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}

    def row_for(record: dict[str, Any]) -> dict[str, Any]:
        key = tuple(record[k] for k in keys)
        if key not in rows:
            rows[key] = _empty(keys, key)
        return rows[key]

    for record in clicks:
        row = row_for(record)
        row["clicks"], row["valid_clicks"] = record["clicks"], record["valid_clicks"]
        row["invalid_clicks"] = {r: record[r] for r in sql.REASONS}
    for record in carts:
        row_for(record)["carts"] = record["carts"]
    for record in orders:
        row = row_for(record)
        currency = record["currency"].strip()
        row["orders"] += record["orders"]
        row["paid_orders"] += record["paid_orders"]
        for m in MONEY:
            row[m][currency] = str(round_money(record[m], currency))
    if not rows and not keys:
        rows[()] = _empty(keys, ())
    for row in rows.values():
        row["conversion_rate"] = round(row["orders"] / row["valid_clicks"], 6) if row["valid_clicks"] else 0.0
    ordered = sorted(rows.items(), key=lambda item: tuple((v is None, str(v)) for v in item[0]))
    return keys, [row for _, row in ordered]


# A cell a spreadsheet would run as a formula (a UTM value or a Referer's host is text someone
# else chose) is kept as text by a leading apostrophe, as OWASP advises for CSV downloads.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def traffic_csv(keys: list[str], rows: list[dict[str, Any]]) -> str:
    currencies = sorted({c for row in rows for m in MONEY for c in row[m]})
    header = [*keys, *SCALARS, *(f"invalid_{r}" for r in sql.REASONS),
              *(f"{m}_{c}" for m in MONEY for c in currencies)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([
            *(_cell(row[k]) for k in keys),
            *(row[s] for s in SCALARS),
            *(row["invalid_clicks"][r] for r in sql.REASONS),
            *(row[m].get(c, "0") for m in MONEY for c in currencies),
        ])
    return out.getvalue()


async def traffic(request: Request) -> Response:
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise invalid({"format": "json or csv"})
    keys, rows = await traffic_rows(request)
    if fmt == "csv":
        # A BOM makes spreadsheet programs read the file as UTF-8.
        return Response("\ufeff" + traffic_csv(keys, rows), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": 'attachment; filename="traffic.csv"'})
    return ApiResponse({"rows": rows})


async def invalid_clicks(request: Request) -> Response:
    ctx = ctx_of(request)
    seller_id = await _seller_scope(request)
    start, end = _period(request, ZoneInfo("UTC"))
    reason = request.query_params.get("reason") or None
    if reason is not None and reason not in sql.REASONS:
        raise invalid({"reason": f"one of {', '.join(sql.REASONS)}"})
    limit = limit_param(request)
    after = keyset_cursor(request)
    async with ctx.pool.acquire() as conn:
        rows = await sql.invalid_clicks(conn, seller_id, start, end, reason, after, limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["clicked_at"], page[-1]["click_id"]) if len(rows) > limit else None
    return ApiResponse({"items": page, "next_cursor": next_cursor})
