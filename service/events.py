"""POST /v1/events: signed order events, idempotency, attribution and commission."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import asyncpg
from iso4217 import Currency
from starlette.requests import Request
from starlette.responses import Response

from service import metrics
from service.api import ApiResponse, parse_object, parse_time, read_body
from service.attribution import Verdict
from service.auth import verify_signature
from service.context import Context
from service.errors import ApiError, invalid
from service.store import events as sql

TYPES = ("cart", "order", "payment", "refund")
FUTURE_TOLERANCE = timedelta(seconds=300)
_AMOUNT_RE = re.compile(r"\d{1,15}(\.\d{1,6})?")
_TEXT_MAX = 128


# --- validation ------------------------------------------------------------------------

def _text(data: dict[str, Any], name: str, problems: dict[str, str], required: bool = True) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            problems[name] = "required"
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= _TEXT_MAX or not value.isprintable():
        problems[name] = f"a string of 1-{_TEXT_MAX} printable characters"
        return None
    return value


def exponent(code: str) -> int:
    """Digits after the point for an ISO 4217 currency; ValueError for unknown or non-money codes."""
    digits = Currency(code).exponent
    if digits is None:
        raise ValueError(code)
    return int(digits)


def _currency(data: dict[str, Any], problems: dict[str, str]) -> str | None:
    value = data.get("currency")
    if not isinstance(value, str):
        problems["currency"] = "required: an ISO 4217 code such as USD"
        return None
    try:
        exponent(value)
    except ValueError:
        problems["currency"] = f"'{value}' is not an ISO 4217 currency"
        return None
    return value


def _amount(data: dict[str, Any], problems: dict[str, str], digits: int | None, required: bool) -> Decimal | None:
    value = data.get("amount")
    if value is None:
        if required:
            problems["amount"] = "required: a decimal string such as \"19.99\""
        return None
    if not isinstance(value, str) or not _AMOUNT_RE.fullmatch(value):
        problems["amount"] = "a decimal string such as \"19.99\""
        return None
    amount = Decimal(value)
    if amount <= 0:
        problems["amount"] = "must be greater than 0"
    elif digits is not None and -amount.as_tuple().exponent > digits:  # type: ignore[operator]
        problems["amount"] = f"at most {digits} decimal places for this currency"
    else:
        return amount
    return None


def validate(data: dict[str, Any], now: datetime) -> dict[str, Any]:
    problems: dict[str, str] = {}
    event: dict[str, Any] = {"event_id": _text(data, "event_id", problems), "type": data.get("type")}
    if event["type"] not in TYPES:
        problems["type"] = "one of cart, order, payment, refund"
    if "occurred_at" not in data:
        problems["occurred_at"] = "required: an RFC 3339 time"
    else:
        try:
            event["occurred_at"] = parse_time(data["occurred_at"], "occurred_at").astimezone(UTC)
        except ApiError as err:
            problems.update(err.fields or {})
        else:
            if event["occurred_at"] - now > FUTURE_TOLERANCE:
                problems["occurred_at"] = "more than 300 s in the future"
    kind = event["type"]
    if kind in ("cart", "order"):
        event["click_id"] = _text(data, "click_id", problems)
    if kind in ("order", "payment", "refund"):
        event["order_id"] = _text(data, "order_id", problems)
    if kind == "order":
        event["currency"] = _currency(data, problems)
        digits = exponent(event["currency"]) if event["currency"] else None
        event["amount"] = _amount(data, problems, digits, required=True)
        event["category"] = _text(data, "category", problems)
    if kind == "refund":
        event["amount"] = _amount(data, problems, None, required=False)
        if "currency" in data:
            event["currency"] = _currency(data, problems)
    if problems:
        raise invalid(problems)
    return event


# --- money -----------------------------------------------------------------------------

def round_money(value: Decimal, currency: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-exponent(currency)), rounding=ROUND_HALF_EVEN)


def commission_of(order: dict[str, Any]) -> dict[str, Any] | None:
    if not order["attributed"]:
        return None
    return {
        "amount": str(round_money(order["commission"], order["currency"])),
        "currency": order["currency"],
        "rate": format(Decimal(order["rate"]).normalize(), "f"),
        "status": order["commission_status"],
    }


def _answer(event: dict[str, Any], status: str, reason: str | None, click_id: str | None, code: str | None,
            order: dict[str, Any] | None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "event_id": event["event_id"], "type": event["type"], "status": status, "reason": reason,
        "click_id": click_id, "code": code, "order_id": event.get("order_id"),
    }
    commission = commission_of(order) if order else None
    if commission is not None:
        answer["commission"] = commission
    return answer


# --- the four types --------------------------------------------------------------------

async def _cart(conn: asyncpg.Connection, event: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    click = verdict.click
    await sql.insert_cart(conn, {
        "event_id": event["event_id"], "click_id": event["click_id"], "counted": verdict.attributed,
        "code": click.code if click else None, "seller_id": click.seller_id if click else None,
        "clicked_at": click.at if click else None, "occurred_at": event["occurred_at"],
    })
    click_id = click.click_id if click and verdict.attributed else event["click_id"]
    return _answer(event, "recorded", verdict.reason, click_id, click.code if click else None, None)


async def _order(conn: asyncpg.Connection, ctx: Context, event: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    click = verdict.click
    rate = await sql.rate_for(conn, event["category"])
    if rate is None:
        rate = ctx.settings.default_commission_rate
    order = {
        "order_id": event["order_id"], "event_id": event["event_id"],
        "click_id": click.click_id if click and verdict.attributed else event["click_id"],
        "attributed": verdict.attributed, "reason": verdict.reason,
        "code": click.code if click else None, "seller_id": click.seller_id if click else None,
        "clicked_at": click.at if click else None, "occurred_at": event["occurred_at"],
        "amount": event["amount"], "currency": event["currency"], "category": event["category"], "rate": rate,
        "commission": round_money(event["amount"] * rate, event["currency"]) if verdict.attributed else Decimal(0),
        "commission_status": "pending",
    }
    if not await sql.insert_order(conn, order):
        raise ApiError("ERR_409", f"order '{event['order_id']}' was already recorded by another event")
    status = "attributed" if verdict.attributed else "not_attributed"
    return _answer(event, status, verdict.reason, order["click_id"], order["code"], order)


async def _locked_order(conn: asyncpg.Connection, event: dict[str, Any]) -> dict[str, Any]:
    order = await sql.lock_order(conn, event["order_id"])
    if order is None:
        raise ApiError("ERR_404", f"no order '{event['order_id']}'")
    return order


async def _payment(conn: asyncpg.Connection, event: dict[str, Any]) -> dict[str, Any]:
    order = await _locked_order(conn, event)
    changes: dict[str, Any] = {"paid_at": order["paid_at"] or event["occurred_at"]}
    if order["commission_status"] == "pending":
        changes["commission_status"] = "payable"
    await sql.update_order(conn, order["order_id"], changes)
    order.update(changes)
    return _answer(event, "recorded", None, order["click_id"], order["code"], order)


async def _refund(conn: asyncpg.Connection, event: dict[str, Any]) -> dict[str, Any]:
    order = await _locked_order(conn, event)
    if event.get("currency") and event["currency"] != order["currency"]:
        raise invalid({"currency": f"the order is in {order['currency']}"})
    remaining = order["amount"] - order["refunded"]
    amount = event["amount"] if event["amount"] is not None else remaining
    if amount <= 0:
        raise invalid({"amount": "the order is already refunded in full"})
    if -amount.as_tuple().exponent > exponent(order["currency"]):
        raise invalid({"amount": f"at most {exponent(order['currency'])} decimal places for {order['currency']}"})
    if amount > remaining:
        raise invalid({"amount": f"refunds would exceed the order amount ({remaining} left to refund)"})
    refunded = order["refunded"] + amount
    changes: dict[str, Any] = {"refunded": refunded}
    if order["attributed"]:
        if refunded == order["amount"]:
            changes.update(commission=Decimal(0), commission_status="reversed")
        else:
            # Pro rata: the commission of what is left, so partial refunds never drift by rounding.
            changes["commission"] = round_money((order["amount"] - refunded) * order["rate"], order["currency"])
    await sql.update_order(conn, order["order_id"], changes)
    order.update(changes)
    event = {**event, "amount": amount}
    return _answer(event, "recorded", None, order["click_id"], order["code"], order)


# --- the endpoint ----------------------------------------------------------------------

def _body_hash(data: dict[str, Any]) -> bytes:
    """Equal for the same JSON however it is spaced or ordered: a retry need not be byte-identical."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).digest()


def _type_label(data: object) -> str | None:
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if kind in TYPES else None


async def post_event(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    raw = await read_body(request, ctx.settings.max_json_bytes)
    data: Any = None
    try:
        verify_signature(request.headers.get("mcode-signature"), raw, ctx.settings.event_secrets, time.time())
        # Order systems send more than we read: text we never store is not judged (every field
        # validate() reads must be printable, which NUL and lone surrogates are not).
        data = parse_object(raw, check_text=False)
        response = await _record(ctx, validate(data, datetime.now(UTC)), _body_hash(data))
    except ApiError:
        if (kind := _type_label(data)) is not None:
            metrics.EVENTS.labels(kind, "rejected").inc()
        raise
    return response


async def _record(ctx: Context, event: dict[str, Any], body_hash: bytes) -> Response:
    kind = event["type"]
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await sql.claim_event(conn, event["event_id"], kind, body_hash, event["occurred_at"]):
            first_hash, answer = await sql.stored_event(conn, event["event_id"])
            if first_hash != body_hash:
                raise ApiError("ERR_409", f"event '{event['event_id']}' was already used with another body")
            return ApiResponse(answer, status_code=200)
        # Judged only once the event is known to be new: a replay never depends on Redis.
        if kind in ("cart", "order"):
            verdict = await ctx.attribution.judge(conn, event["click_id"], event["occurred_at"])
            answer = await (_cart(conn, event, verdict) if kind == "cart" else _order(conn, ctx, event, verdict))
        elif kind == "payment":
            answer = await _payment(conn, event)
        else:
            answer = await _refund(conn, event)
        await sql.save_answer(conn, event["event_id"], answer, event.get("order_id"), answer["click_id"],
                              event.get("amount"))
    metrics.EVENTS.labels(kind, answer["status"]).inc()
    if kind == "order":
        metrics.ATTRIBUTIONS.labels(answer["reason"] or "attributed").inc()
    return ApiResponse(answer, status_code=201)
