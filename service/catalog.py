"""The /v1 management handlers: sellers, seller keys, products, commission rates and codes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response

from service import auth, qr
from service.api import ApiResponse, encode_cursor, json_object, keyset_cursor, limit_param, validate
from service.codes import UTM_FIELDS, campaign_warnings, channel_of, utm_problems
from service.context import Context
from service.errors import ApiError, invalid
from service.store import catalog as sql
from service.urls import UrlError, landing_url, normalize_product_url

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
Ident = Annotated[str, StringConstraints(pattern=ID_RE.pattern, max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SellerIn(_Body):
    name: Text
    status: Literal["active", "frozen", "under_review"]
    verified: bool
    affiliate_enabled: bool


class ProductIn(_Body):
    seller_id: Ident
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    category: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    status: Literal["listed", "delisted"]
    stock: Annotated[int, Field(ge=0, le=2_000_000_000)]


class RateIn(_Body):
    rate: str


class CodeIn(_Body):
    seller_id: Ident
    product_id: Ident
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_content: str
    utm_term: str | None = None


class CodePatch(_Body):
    active: bool


def ctx_of(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


# The console calls these handlers in-process for a session it has already checked, and puts its
# principal here; a scope key cannot come from a client, so no header can forge one.
PRINCIPAL_SCOPE = "mcode.principal"


async def principal(request: Request) -> auth.Principal:
    given = request.scope.get(PRINCIPAL_SCOPE)
    if isinstance(given, auth.Principal):
        return given
    ctx = ctx_of(request)
    return await auth.authenticate(request, ctx.settings.admin_tokens, ctx.pool)


def path_id(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    if not ID_RE.fullmatch(value):
        raise invalid({name: "1-64 characters: letters, digits and _ . : -, starting with a letter or digit"})
    return value


def seller_out(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("seller_id", "name", "status", "verified", "affiliate_enabled", "created_at", "updated_at")
    return {k: row[k] for k in keys}


def product_out(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("product_id", "seller_id", "url", "category", "status", "stock", "created_at", "updated_at")
    return {k: row[k] for k in keys}


def sellable(product: dict[str, Any]) -> bool:
    return bool(product["status"] == "listed" and product["stock"] > 0)


def seller_permitted(seller: dict[str, Any]) -> bool:
    return bool(seller["status"] == "active" and seller["verified"] and seller["affiliate_enabled"])


# --- sellers and keys ------------------------------------------------------------------

async def put_seller(request: Request) -> Response:
    ctx = ctx_of(request)
    (await principal(request)).require_admin()
    seller_id = path_id(request, "seller_id")
    body = validate(SellerIn, await json_object(request, ctx.settings.max_json_bytes))
    async with ctx.pool.acquire() as conn:
        row, created = await sql.upsert_seller(
            conn, seller_id, body.name, body.status, body.verified, body.affiliate_enabled
        )
    return ApiResponse(seller_out(row), status_code=201 if created else 200)


async def get_seller(request: Request) -> Response:
    ctx = ctx_of(request)
    seller_id = path_id(request, "seller_id")
    (await principal(request)).require_seller(seller_id)
    async with ctx.pool.acquire() as conn:
        row = await sql.get_seller(conn, seller_id)
    if row is None:
        raise ApiError("ERR_404", f"no seller '{seller_id}'")
    return ApiResponse(seller_out(row))


async def issue_key(request: Request) -> Response:
    ctx = ctx_of(request)
    (await principal(request)).require_admin()
    seller_id = path_id(request, "seller_id")
    key, key_hash = auth.new_seller_key()
    async with ctx.pool.acquire() as conn:
        if await sql.get_seller(conn, seller_id) is None:
            raise ApiError("ERR_404", f"no seller '{seller_id}'")
        await sql.add_seller_key(conn, seller_id, key_hash)
    return ApiResponse({"key": key, "seller_id": seller_id}, status_code=201)


# --- products and rates ----------------------------------------------------------------

async def put_product(request: Request) -> Response:
    ctx = ctx_of(request)
    (await principal(request)).require_admin()
    product_id = path_id(request, "product_id")
    body = validate(ProductIn, await json_object(request, ctx.settings.max_json_bytes))
    try:
        url = normalize_product_url(body.url, ctx.hosts)
    except UrlError as exc:
        raise invalid({"url": str(exc)}) from None
    async with ctx.pool.acquire() as conn:
        if await sql.get_seller(conn, body.seller_id) is None:
            raise invalid({"seller_id": f"no seller '{body.seller_id}'"})
        row, created = await sql.upsert_product(
            conn, product_id, body.seller_id, url, body.category, body.status, body.stock
        )
    return ApiResponse(product_out(row), status_code=201 if created else 200)


async def get_product(request: Request) -> Response:
    ctx = ctx_of(request)
    who = await principal(request)
    product_id = path_id(request, "product_id")
    async with ctx.pool.acquire() as conn:
        row = await sql.get_product(conn, product_id)
    if row is None:
        raise ApiError("ERR_404", f"no product '{product_id}'")
    who.require_seller(row["seller_id"])
    return ApiResponse(product_out(row))


def parse_rate(text: str) -> Decimal:
    try:
        rate = Decimal(text)
    except InvalidOperation:
        raise invalid({"rate": "a decimal string such as \"0.08\""}) from None
    if not rate.is_finite() or not Decimal(0) <= rate <= Decimal(1) or rate.as_tuple().exponent < -5:  # type: ignore[operator]
        raise invalid({"rate": "a decimal from 0 to 1 with at most 5 decimal places"})
    return rate


async def put_rate(request: Request) -> Response:
    ctx = ctx_of(request)
    (await principal(request)).require_admin()
    category = request.path_params["category"]
    if not 1 <= len(category) <= 100:
        raise invalid({"category": "1-100 characters"})
    body = validate(RateIn, await json_object(request, ctx.settings.max_json_bytes))
    rate = parse_rate(body.rate)
    async with ctx.pool.acquire() as conn:
        row, created = await sql.set_rate(conn, category, rate)
    return ApiResponse(_rate_out(row), status_code=201 if created else 200)


def _rate_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"category": row["category"], "rate": format(row["rate"].normalize(), "f"), "updated_at": row["updated_at"]}


async def list_rates(request: Request) -> Response:
    ctx = ctx_of(request)
    await principal(request)
    async with ctx.pool.acquire() as conn:
        rows = await sql.list_rates(conn)
    default = format(ctx.settings.default_commission_rate.normalize(), "f")
    return ApiResponse({"items": [_rate_out(r) for r in rows], "default_rate": default, "next_cursor": None})


# --- codes -----------------------------------------------------------------------------

def code_out(ctx: Context, row: dict[str, Any]) -> dict[str, Any]:
    utm = {k: row[k] for k in UTM_FIELDS}
    return {
        "code": row["code"],
        "short_url": ctx.short_url(row["code"]),
        "landing_url": landing_url(row["product_url"], utm),
        "seller_id": row["seller_id"],
        "product_id": row["product_id"],
        **utm,
        "channel": row["channel"],
        "active": row["active"],
        "created_at": row["created_at"],
        "warnings": campaign_warnings(row["utm_campaign"]),
    }


def code_values(data: dict[str, Any]) -> dict[str, Any]:
    """Validated values of a code to create, or ERR_422 naming every bad field."""
    problems = utm_problems(data)
    shape = {k: v for k, v in data.items() if k not in problems}
    try:
        body = validate(CodeIn, {**shape, **{k: "x" for k in problems}})
    except ApiError as exc:
        problems = {**(exc.fields or {}), **problems}
        raise invalid(problems) from None
    if problems:
        raise invalid(problems)
    values = body.model_dump()
    values["channel"] = channel_of(values["utm_source"])
    return values


async def create_code(ctx: Context, conn: asyncpg.Connection, values: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The code for these values and whether it is new; ApiError when it may not exist."""
    seller = await sql.get_seller(conn, values["seller_id"])
    if seller is None:
        raise invalid({"seller_id": f"no seller '{values['seller_id']}'"})
    if not seller_permitted(seller):
        raise ApiError("ERR_403", "the seller must be active, verified and in the affiliate program")
    product = await sql.get_product(conn, values["product_id"])
    if product is None:
        raise invalid({"product_id": f"no product '{values['product_id']}'"})
    if product["seller_id"] != values["seller_id"]:
        raise invalid({"product_id": "this product belongs to another seller"})
    if not sellable(product):
        raise ApiError("ERR_404", "the product is not sellable (delisted or out of stock)")
    existing = await sql.find_code_by_values(conn, values)
    for _ in range(5):
        if existing is not None:
            return {**existing, "product_url": product["url"]}, False
        row = await sql.insert_code(conn, ctx.signer.mint(), values)
        if row is not None:
            return {**row, "product_url": product["url"]}, True
        # Either a concurrent request made the same code, or the random code collided.
        existing = await sql.find_code_by_values(conn, values)
    raise RuntimeError("could not mint a unique code")


async def post_code(request: Request) -> Response:
    ctx = ctx_of(request)
    who = await principal(request)
    values = code_values(await json_object(request, ctx.settings.max_json_bytes))
    who.require_seller(values["seller_id"])
    async with ctx.pool.acquire() as conn:
        row, created = await create_code(ctx, conn, values)
    return ApiResponse(code_out(ctx, row), status_code=201 if created else 200)


async def _owned_code(request: Request, who: auth.Principal, row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        raise ApiError("ERR_404", f"no code '{request.path_params['code']}'")
    who.require_seller(row["seller_id"])
    return row


async def get_code(request: Request) -> Response:
    ctx = ctx_of(request)
    who = await principal(request)
    code = request.path_params["code"]
    async with ctx.pool.acquire() as conn:
        row = await _owned_code(request, who, await sql.get_code(conn, code) if ctx.signer.verify(code) else None)
    return ApiResponse(code_out(ctx, row))


async def get_code_qr(request: Request) -> Response:
    ctx = ctx_of(request)
    who = await principal(request)
    code = request.path_params["code"]
    kind = request.query_params.get("format", "svg")
    raw_scale = request.query_params.get("scale", str(qr.DEFAULT_SCALE))
    fields: dict[str, str] = {}
    if kind not in qr.FORMATS:
        fields["format"] = "must be svg or png"
    if not (raw_scale.isascii() and raw_scale.isdigit() and int(raw_scale) in qr.SCALES):
        fields["scale"] = f"must be a whole number from {qr.SCALES.start} to {qr.SCALES.stop - 1}"
    if fields:
        raise invalid(fields, "the QR code cannot be drawn so")
    async with ctx.pool.acquire() as conn:
        await _owned_code(request, who, await sql.get_code(conn, code) if ctx.signer.verify(code) else None)
    body = qr.image(qr.scan_url(ctx.short_url(code)), kind, int(raw_scale))
    return Response(body, media_type=qr.FORMATS[kind], headers={
        "content-disposition": f'inline; filename="{code}.{kind}"', "cache-control": "private, max-age=300"})


async def patch_code(request: Request) -> Response:
    ctx = ctx_of(request)
    who = await principal(request)
    code = request.path_params["code"]
    body = validate(CodePatch, await json_object(request, ctx.settings.max_json_bytes))
    async with ctx.pool.acquire() as conn, conn.transaction():
        await _owned_code(request, who, await sql.get_code(conn, code) if ctx.signer.verify(code) else None)
        row = await sql.set_code_active(conn, code, body.active)
    assert row is not None
    return ApiResponse(code_out(ctx, row))


async def list_codes(request: Request) -> Response:
    ctx = ctx_of(request)
    who = await principal(request)
    params = request.query_params
    seller_id = params.get("seller_id") or who.seller_id
    if seller_id is not None:
        who.require_seller(seller_id)
    limit = limit_param(request)
    after = keyset_cursor(request)
    async with ctx.pool.acquire() as conn:
        rows = await sql.list_codes(
            conn, seller_id, params.get("utm_campaign") or None, params.get("channel") or None, after, limit + 1
        )
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["code"]) if len(rows) > limit else None
    return ApiResponse({"items": [code_out(ctx, r) for r in page], "next_cursor": next_cursor})
