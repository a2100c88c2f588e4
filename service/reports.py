"""Traffic and invalid-click reports (JSON or CSV)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
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


def _period(request: Request, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) in UTC for the inclusive local days `from`..`to`."""
    today = datetime.now(tz).date()
    to = _day(request, "to", today)
    start_day = _day(request, "from", to - timedelta(days=DEFAULT_DAYS - 1))
    if start_day > to:
        raise invalid({"from": "must not be after 'to'"})
    if (to - start_day).days + 1 > MAX_DAYS:
        raise invalid({"to": f"at most {MAX_DAYS} days from 'from'"})
    start = datetime.combine(start_day, datetime.min.time(), tz)
    end = datetime.combine(to + timedelta(days=1), datetime.min.time(), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


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
    start, end = _period(request, tz)
    keys = _group_by(request)
    args = (keys, seller_id, start, end, tz.key)
    # Local midnights on whole UTC hours (most zones): the hourly rollups answer exactly.
    whole_hours = start.minute == start.second == end.minute == end.second == 0
    async with ctx.pool.acquire() as conn:
        clicks = await (sql.hourly_click_counts if whole_hours else sql.click_counts)(conn, *args)
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


def traffic_csv(keys: list[str], rows: list[dict[str, Any]]) -> str:
    currencies = sorted({c for row in rows for m in MONEY for c in row[m]})
    header = [*keys, *SCALARS, *(f"invalid_{r}" for r in sql.REASONS),
              *(f"{m}_{c}" for m in MONEY for c in currencies)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([
            *("" if row[k] is None else row[k] for k in keys),
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
