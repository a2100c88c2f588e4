"""The seller console: HTML pages over the /v1 handlers themselves.

Each page calls the API's handler in-process, with the session's principal in the request scope
(catalog.PRINCIPAL_SCOPE), so every rule, refusal and number is the API's own. Forms post and
redirect; a few lines of script add copy buttons, live campaign advice and the chart.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from service import catalog, imports, reports, sessions
from service.api import UNSTORABLE, storable
from service.codes import CHANNELS, UTM_FIELDS, campaign_warnings, channel_of, utm_problems
from service.context import Context
from service.errors import ApiError
from service.sessions import Session
from service.store import reports as report_sql

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static" / "console"
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates" / "console"), autoescape=True,
    trim_blocks=True, lstrip_blocks=True,
)
PAGE_SIZE = 50
BREAKDOWN_ROWS = 25
REPORTS_AT_ONCE = 3
PRESETS = (("Today", 1), ("7 days", 7), ("30 days", 30), ("90 days", 90))
DIMENSIONS = {
    "channel": "Channel", "utm_campaign": "Campaign", "code": "Code", "country": "Country", "device": "Device",
    "browser": "Browser", "os": "Operating system", "referrer": "Referrer", "via": "Link or QR code",
}
ZONES = ("UTC", "Europe/London", "Europe/Berlin", "Europe/Moscow", "Europe/Istanbul", "Asia/Dubai", "Asia/Kolkata",
         "Asia/Bangkok", "Asia/Shanghai", "Asia/Seoul", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo",
         "America/New_York", "America/Chicago", "America/Los_Angeles")
# The whole page is ours: no inline script, style or frame, and forms post only here.
HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
# Room for the CSV itself plus the form's other fields and multipart framing.
FORM_SLACK_BYTES = 64 * 1024


def reason_sentences(dedup_window_s: int) -> dict[str, str]:
    hours, minutes = divmod(dedup_window_s // 60, 60)
    window = f"{dedup_window_s // 60} minutes" if minutes or not hours else "1 hour" if hours == 1 else f"{hours} hours"
    return {
        "ERR_400": "The link was mistyped, cut short or altered, so it matched none of your codes.",
        "ERR_403": "Your seller account could not take clicks then: not active, not verified, "
                   "or outside the affiliate program.",
        "ERR_404": "The product could not be sold then: delisted, out of stock, or on a site no longer allowed.",
        "ERR_410": "You had switched the code off when the buyer clicked it.",
        "ERR_PREFETCH": "A browser loaded the link ahead of time, before anyone clicked; "
                        "a buyer's real click is counted on its own.",
        "ERR_BOT": "A program opened the link, not a person: a crawler, a link preview or a script.",
        "ERR_DUP": f"The same device had already clicked this code within {window}; only its first click counts.",
    }


@dataclass
class Visit:
    """One console request: its session, the seller in view and the submitted form."""

    request: Request
    ctx: Context
    session: Session
    seller_id: str | None  # None only for an admin who has not picked a seller yet
    form: FormData | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def is_admin(self) -> bool:
        return self.session.principal.is_admin

    def href(self, path: str, **params: Any) -> str:
        """A console link that keeps the admin's chosen seller (a seller's own is implied)."""
        query = {"seller_id": self.seller_id} if self.is_admin and self.seller_id else {}
        query |= {k: v for k, v in params.items() if v not in (None, "")}
        return f"{path}?{urlencode(query)}" if query else path

    async def call(self, handler: Callable[[Request], Awaitable[Response]], *, method: str = "GET",
                   query: Mapping[str, Any] | None = None, path_params: Mapping[str, str] | None = None,
                   body: Any = None) -> Response:
        """The API handler's answer to a request made for this session's principal."""
        payload = b"" if body is None else json.dumps(body).encode()
        scope = {
            **self.request.scope, "method": method, "path_params": dict(path_params or {}),
            "query_string": urlencode({k: v for k, v in (query or {}).items() if v not in (None, "")}).encode(),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            catalog.PRINCIPAL_SCOPE: self.session.principal,
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        return await handler(Request(scope, receive))

    async def json(self, handler: Callable[[Request], Awaitable[Response]], **kwargs: Any) -> Any:
        return json.loads(bytes((await self.call(handler, **kwargs)).body))

    async def listing(self, handler: Callable[[Request], Awaitable[Response]],
                      filters: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """A page of an API list for the filters (and this request's cursor and limit), and the
        fields a 422 named (with an empty page)."""
        params = self.request.query_params
        try:
            page = await self.json(handler, query={"seller_id": self.seller_id, **filters,
                                                   "cursor": params.get("cursor"),
                                                   "limit": params.get("limit") or PAGE_SIZE})
        except ApiError as err:
            if err.code != "ERR_422":
                raise
            return {"items": [], "next_cursor": None}, err.fields or {}
        return page, {}

    async def traffic_rows(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of /v1/reports/traffic for this query, from its own code."""
        scope = {**self.request.scope, "query_string": urlencode(query).encode(), catalog.PRINCIPAL_SCOPE:
                 self.session.principal}
        _, rows = await reports.traffic_rows(Request(scope))
        return rows

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        body = TEMPLATES.get_template(template).render(visit=self, csrf=self.session.csrf(self.ctx), **values)
        return HTMLResponse(body, status_code=status, headers=HEADERS)


Page = Callable[[Visit], Awaitable[Response]]


def _ctx(request: Request) -> Context:
    return catalog.ctx_of(request)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def same_origin(request: Request, ctx: Context) -> bool:
    """False for a request another site made the browser send; browsers say so in Sec-Fetch-Site
    and Origin (absent from older ones and from non-browsers, which carry no session cookie)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin in (_origin(str(request.url)), _origin(ctx.settings.public_url))


TITLES = {"ERR_400": "Bad request", "ERR_403": "Not allowed", "ERR_404": "Not found", "ERR_413": "Too large",
          "ERR_422": "Invalid input"}


def error_page(status: int, code: str, message: str, visit: Visit | None = None) -> HTMLResponse:
    title = f"{TITLES.get(code, 'Error')} ({code})"
    message = message[:1].upper() + message[1:]
    if visit is not None:  # signed in: the page keeps its header, to go elsewhere or sign out
        return visit.render("error.html", status=status, title=title, message=message)
    body = TEMPLATES.get_template("error.html").render(visit=None, title=title, message=message)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _safe_next(target: str | None) -> str:
    """Only a path within the console: never a link elsewhere (an open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console"


def to_sign_in(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = here if request.method == "GET" else "/console"
    return RedirectResponse(f"/console/sign-in?{urlencode({'next': target})}", status_code=303, headers=HEADERS)


def page(*, seller: bool = True) -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    """A console endpoint: a live session (else the sign-in page), the cross-site checks on every
    POST, the seller in view (a seller's own; an admin's choice), and refusals as pages."""

    def wrap(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            ctx = _ctx(request)
            session = await sessions.read(ctx, request.cookies.get(sessions.COOKIE))
            if session is None:
                return to_sign_in(request)
            if request.method != "POST":
                return await _serve(handler, Visit(request, ctx, session, None), seller)
            if not same_origin(request, ctx):
                return error_page(403, "ERR_403", "This form was sent from another site and was refused.")
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > ctx.settings.max_csv_bytes + FORM_SLACK_BYTES:
                return error_page(413, "ERR_413", "The upload is too large.")
            async with request.form(max_files=1, max_fields=32) as form:
                given = form.get("csrf")
                if not sessions.token_matches(session.csrf(ctx), given if isinstance(given, str) else None):
                    return error_page(403, "ERR_403",
                                      "This form is out of date or was not sent from the console. Reload and retry.")
                return await _serve(handler, Visit(request, ctx, session, None, form), seller)

        return endpoint

    return wrap


async def _serve(handler: Page, visit: Visit, seller_needed: bool) -> Response:
    who = visit.session.principal
    raw = (visit.form or visit.request.query_params).get("seller_id")
    visit.seller_id = raw if isinstance(raw, str) and raw else who.seller_id
    try:
        if visit.seller_id is not None:
            who.require_seller(visit.seller_id)
        elif seller_needed:
            return _redirect("/console/sellers")
        return await handler(visit)
    except ApiError as err:
        if err.code == "ERR_403":  # the header's links must not lead on to the seller refused
            visit.seller_id = who.seller_id
        return error_page(err.status, err.code, err.message, visit)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def _text(form: FormData | None, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value.strip() if isinstance(value, str) else ""


# --- signing in and out ----------------------------------------------------------------

def _sign_in_form(request: Request, ctx: Context, status: int = 200, error: str = "",
                  next_url: str = "/console") -> HTMLResponse:
    nonce = request.cookies.get(sessions.SIGN_IN_COOKIE, "")
    fresh = not (20 <= len(nonce) <= 40 and nonce.replace("-", "").replace("_", "").isalnum())
    if fresh:
        nonce = sessions.new_nonce()
    body = TEMPLATES.get_template("sign_in.html").render(
        visit=None, token=sessions.sign_in_token(ctx, nonce), error=error, next_url=_safe_next(next_url),
        signed_out="signed_out" in request.query_params)
    response = HTMLResponse(body, status_code=status, headers=HEADERS)
    if fresh:
        _set_cookie(response, ctx, sessions.SIGN_IN_COOKIE, nonce, sessions.SIGN_IN_LIFETIME_S)
    return response


def _set_cookie(response: Response, ctx: Context, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=sessions.COOKIE_PATH, httponly=True,
                        samesite="strict", secure=ctx.settings.cookie_secure)


async def sign_in_page(request: Request) -> Response:
    ctx = _ctx(request)
    if await sessions.read(ctx, request.cookies.get(sessions.COOKIE)) is not None:
        return _redirect(_safe_next(request.query_params.get("next")))
    return _sign_in_form(request, ctx, next_url=request.query_params.get("next") or "/console")


async def sign_in(request: Request) -> Response:
    ctx = _ctx(request)
    if not same_origin(request, ctx):
        return error_page(403, "ERR_403", "This form was sent from another site and was refused.")
    async with request.form(max_files=0, max_fields=8) as form:
        return await _sign_in(request, ctx, form)


async def _sign_in(request: Request, ctx: Context, form: FormData) -> Response:
    next_url = _text(form, "next") or "/console"
    nonce = request.cookies.get(sessions.SIGN_IN_COOKIE, "")
    if not nonce or not sessions.token_matches(sessions.sign_in_token(ctx, nonce), _text(form, "csrf")):
        return _sign_in_form(request, ctx, 403, "This form had expired. Please enter your key again.", next_url)
    opened = await sessions.sign_in(ctx, _text(form, "credential"))
    if opened is None:
        return _sign_in_form(request, ctx, 401, "Unknown seller key or admin token.", next_url)
    _, cookie = opened
    response = _redirect(_safe_next(next_url))
    _set_cookie(response, ctx, sessions.COOKIE, cookie, sessions.LIFETIME_S)
    response.delete_cookie(sessions.SIGN_IN_COOKIE, path=sessions.COOKIE_PATH, httponly=True, samesite="strict",
                           secure=ctx.settings.cookie_secure)
    return response


@page(seller=False)
async def sign_out(visit: Visit) -> Response:
    await sessions.sign_out(visit.ctx, visit.session)
    response = _redirect("/console/sign-in?signed_out=1")
    response.delete_cookie(sessions.COOKIE, path=sessions.COOKIE_PATH, httponly=True, samesite="strict",
                           secure=visit.ctx.settings.cookie_secure)
    return response


@page()
async def home(visit: Visit) -> Response:
    return _redirect(visit.href("/console/traffic"))


@page(seller=False)
async def sellers(visit: Visit) -> Response:
    """An admin picks the seller to work for; a seller has only its own."""
    if not visit.is_admin:
        return _redirect("/console/traffic")
    errors: dict[str, str] = {}
    typed = visit.seller_id or ""
    if typed:
        try:
            await visit.call(catalog.get_seller, path_params={"seller_id": typed})
        except ApiError as err:
            errors["seller_id"] = (err.fields or {}).get("seller_id", err.message)
            visit.seller_id = None  # not a seller to work for: the header must not offer it
        else:
            return _redirect(visit.href("/console/traffic"))
    return visit.render("sellers.html", status=422 if errors else 200, errors=errors, typed=typed)


# --- codes -----------------------------------------------------------------------------

@page()
async def codes(visit: Visit) -> Response:
    params = visit.request.query_params
    filters = {"utm_campaign": params.get("utm_campaign", ""), "channel": params.get("channel", "")}
    listing, errors = await visit.listing(catalog.list_codes, filters)
    return visit.render("codes.html", status=422 if errors else 200, listing=listing, filters=filters,
                        errors=errors, channels=sorted(set(CHANNELS.values()) | {"other"}),
                        paging=filters | {"limit": params.get("limit", "")}, paged=bool(params.get("cursor")))


async def _products(visit: Visit) -> list[str]:
    """Products the seller has made codes for, offered as suggestions in the create form."""
    listing = await visit.json(catalog.list_codes, query={"seller_id": visit.seller_id, "limit": 500})
    return sorted({c["product_id"] for c in listing["items"]})


@page()
async def new_code(visit: Visit) -> Response:
    values = {k: visit.request.query_params.get(k, "") for k in ("product_id", *UTM_FIELDS)}
    return visit.render("code_new.html", values=values, errors={}, error=None, products=await _products(visit),
                        advice=_advice(values), preview=_preview(values))


@page()
async def create_code(visit: Visit) -> Response:
    values = {k: _text(visit.form, k) for k in ("product_id", *UTM_FIELDS)}
    body: dict[str, Any] = {"seller_id": visit.seller_id, **values}
    if not body["utm_term"]:
        del body["utm_term"]
    try:
        made = await visit.json(catalog.post_code, method="POST", body=body)
    except ApiError as err:
        errors = dict(err.fields or {})
        return visit.render("code_new.html", status=err.status, values=values, errors=errors,
                            error=None if err.code == "ERR_422" else err.message,
                            products=await _products(visit), advice=_advice(values), preview=_preview(values))
    return _redirect(visit.href(f"/console/codes/{made['code']}", made="1"))


def _advice(values: Mapping[str, str]) -> dict[str, Any]:
    source, campaign = values.get("utm_source", ""), values.get("utm_campaign", "")
    return {"channel": channel_of(source) if source else "",
            "warnings": campaign_warnings(campaign) if campaign else [],
            "example": f"{_prefix(source)}_{datetime.now(UTC):%Y%m}_your_theme"}


def _preview(values: Mapping[str, str]) -> str:
    """The UTM query the code adds to the product link (the API's landing_url carries it)."""
    return urlencode({k: values[k] for k in UTM_FIELDS if values.get(k)})


def _prefix(source: str) -> str:
    cleaned = "".join(ch for ch in source.lower() if ch.isascii() and ch.isalnum())[:12]
    return cleaned or "ch"


@page(seller=False)
async def advice(visit: Visit) -> Response:
    """The campaign advice and channel of UTM values being typed: the rules the API applies."""
    params = visit.request.query_params
    values: dict[str, object] = {k: params[k] for k in UTM_FIELDS if k in params}
    problems = {k: v for k, v in utm_problems(values).items() if k in values}
    typed = {k: v for k, v in values.items() if isinstance(v, str)}
    return JSONResponse({**_advice(typed), "problems": problems}, headers=HEADERS)


@page(seller=False)
async def code_page(visit: Visit) -> Response:
    code = await visit.json(catalog.get_code, path_params={"code": visit.request.path_params["code"]})
    visit.seller_id = code["seller_id"]
    if "made" in visit.request.query_params:
        visit.notices.append("Code created. Copy the short link or download its QR code below.")
    return visit.render("code.html", code=code)


@page(seller=False)
async def set_active(visit: Visit) -> Response:
    code = visit.request.path_params["code"]
    active = _text(visit.form, "active") == "true"
    await visit.call(catalog.patch_code, method="PATCH", path_params={"code": code}, body={"active": active})
    return _redirect(_safe_next(_text(visit.form, "next") or f"/console/codes/{code}"))


@page(seller=False)
async def code_qr(visit: Visit) -> Response:
    params = visit.request.query_params
    response = await visit.call(catalog.get_code_qr, path_params={"code": visit.request.path_params["code"]},
                                 query={"format": params.get("format"), "scale": params.get("scale")})
    if "download" in params:
        response.headers["content-disposition"] = response.headers["content-disposition"].replace(
            "inline", "attachment")
    return response


# --- bulk upload -----------------------------------------------------------------------

@page()
async def bulk_page(visit: Visit) -> Response:
    return visit.render("bulk.html", columns=imports.COLUMNS, max_rows=imports.MAX_ROWS, outcome=None, error=None,
                        download=None)


async def _read_upload(visit: Visit) -> imports.Upload:
    upload = visit.form.get("csv") if visit.form is not None else None
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ApiError("ERR_400", "Choose a CSV file to upload.")
    limit = visit.ctx.settings.max_csv_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError("ERR_413", f"The file is over the limit of {limit} bytes.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("ERR_400", "The CSV must be UTF-8.") from None
    if not storable(text):
        raise ApiError("ERR_422", f"The CSV {UNSTORABLE}.")
    parsed = imports.parse(text)
    if len(parsed.records) > imports.MAX_ROWS:
        raise ApiError("ERR_413", f"{len(parsed.records)} data rows; at most {imports.MAX_ROWS} per upload. "
                                  "Nothing was created.")
    return parsed


@page()
async def bulk_upload(visit: Visit) -> Response:
    """The rules of POST /v1/codes/bulk (imports.py), with the results shown and kept an hour for download."""
    try:
        upload = await _read_upload(visit)
    except ApiError as err:
        message = err.message + ("" if not err.fields else " (" + "; ".join(
            f"{k}: {v}" for k, v in err.fields.items()) + ")")
        return visit.render("bulk.html", status=err.status, columns=imports.COLUMNS, max_rows=imports.MAX_ROWS,
                            outcome=None, error=message, download=None)
    outcome = await imports.run(visit.ctx, upload, visit.session.principal.seller_id)
    upload_id = secrets.token_urlsafe(12)
    await visit.ctx.redis.set(sessions.bulk_key(visit.ctx, visit.session, upload_id),
                              imports.as_csv(upload, outcome), ex=sessions.BULK_LIFETIME_S)
    return visit.render("bulk.html", columns=imports.COLUMNS, max_rows=imports.MAX_ROWS, outcome=outcome,
                        error=None, download=visit.href(f"/console/codes/bulk/{upload_id}.csv"),
                        error_text=imports.error_text)


@page(seller=False)
async def bulk_csv(visit: Visit) -> Response:
    upload_id = visit.request.path_params["upload_id"]
    stored = await visit.ctx.redis.get(sessions.bulk_key(visit.ctx, visit.session, upload_id))
    if stored is None:
        raise ApiError("ERR_404", "These upload results are no longer kept (an hour after upload). Upload again.")
    text = stored.decode() if isinstance(stored, bytes) else str(stored)
    return Response("\ufeff" + text, media_type="text/csv; charset=utf-8", headers={
        **HEADERS, "content-disposition": 'attachment; filename="codes-results.csv"'})


# --- traffic ---------------------------------------------------------------------------

def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo("UTC")


def audience() -> list[str]:
    """The audience dimensions the reports know by now (the report's own list decides)."""
    return [a for a in report_sql.AUDIENCE if a in report_sql.KEYS]


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _series(days: list[str], by_day: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Valid and invalid clicks per day, every day of the period (zero where none), for the chart."""
    found = {row["day"]: row for row in by_day}
    valid = [found[d]["valid_clicks"] if d in found else 0 for d in days]
    invalid = [found[d]["clicks"] - found[d]["valid_clicks"] if d in found else 0 for d in days]
    return {"days": days, "valid": valid, "invalid": invalid}


def _top(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The BREAKDOWN_ROWS groups with the most clicks, and how many more there are (in the CSV):
    referrers and browsers come from what buyers send, and may be many."""
    ranked = sorted(rows, key=lambda row: -row["clicks"])
    return ranked[:BREAKDOWN_ROWS], max(0, len(ranked) - BREAKDOWN_ROWS)


@page()
async def traffic(visit: Visit) -> Response:
    params = visit.request.query_params
    tz = params.get("tz") or "UTC"
    today = datetime.now(_zone(tz)).date()
    query = {"seller_id": visit.seller_id or "", "from": params.get("from") or (today - timedelta(days=29)).isoformat(),
             "to": params.get("to") or today.isoformat(), "tz": tz}
    presets = [(label, (today - timedelta(days=n - 1)).isoformat(), today.isoformat()) for label, n in PRESETS]
    shared: dict[str, Any] = {"query": query, "presets": presets, "zones": ZONES}
    try:
        keys = ("channel", "utm_campaign", "code", *audience())
        # the page's reports a few at a time, each on a connection of its own (a big seller's take a
        # while), leaving the rest of the pool to order events and the writer
        room = asyncio.Semaphore(REPORTS_AT_ONCE)

        async def report(group_by: str) -> list[dict[str, Any]]:
            async with room:
                return await visit.traffic_rows(query | {"group_by": group_by})

        [totals], by_day, *grouped = await asyncio.gather(*(report(g) for g in ("", "day", *keys)))
        breakdowns = [(key, DIMENSIONS.get(key, key), *_top(rows)) for key, rows in zip(keys, grouped, strict=True)]
    except ApiError as err:
        if err.code != "ERR_422":
            raise
        return visit.render("traffic.html", status=422, errors=err.fields or {}, **shared)
    currencies = sorted({c for m in reports.MONEY for c in totals[m]})
    return visit.render(
        "traffic.html", errors={}, totals=totals, by_day=by_day, breakdowns=breakdowns, currencies=currencies,
        series=json.dumps(_series(_days(query["from"], query["to"]), by_day)).replace("<", "\\u003c"),
        reasons=reason_sentences(visit.ctx.settings.dedup_window_s), csv=lambda group_by: visit.href(
            "/console/traffic.csv", **{k: v for k, v in query.items() if k != "seller_id"}, group_by=group_by),
        **shared)


@page()
async def traffic_csv(visit: Visit) -> Response:
    """Exactly /v1/reports/traffic?format=csv for the same query."""
    params = visit.request.query_params
    query = {k: params.get(k) for k in ("from", "to", "tz", "group_by")}
    response = await visit.call(reports.traffic, query={**query, "seller_id": visit.seller_id, "format": "csv"})
    response.headers.update(HEADERS)
    return response


# --- invalid clicks --------------------------------------------------------------------

@page()
async def invalid_clicks(visit: Visit) -> Response:
    params = visit.request.query_params
    filters = {k: params.get(k, "") for k in ("from", "to", "reason")}
    listing, errors = await visit.listing(reports.invalid_clicks, filters)
    return visit.render("invalid_clicks.html", status=422 if errors else 200, listing=listing, filters=filters,
                        errors=errors, reasons=reason_sentences(visit.ctx.settings.dedup_window_s),
                        paging=filters | {"limit": params.get("limit", "")}, paged=bool(params.get("cursor")))


ROUTES: list[BaseRoute] = [
    Route("/console", home, methods=["GET"]),
    Route("/console/sign-in", sign_in_page, methods=["GET"]),
    Route("/console/sign-in", sign_in, methods=["POST"]),
    Route("/console/sign-out", sign_out, methods=["POST"]),
    Route("/console/sellers", sellers, methods=["GET"]),
    Route("/console/codes", codes, methods=["GET"]),
    Route("/console/codes", create_code, methods=["POST"]),
    Route("/console/codes/new", new_code, methods=["GET"]),
    Route("/console/codes/bulk", bulk_page, methods=["GET"]),
    Route("/console/codes/bulk", bulk_upload, methods=["POST"]),
    Route("/console/codes/bulk/{upload_id}.csv", bulk_csv, methods=["GET"]),
    Route("/console/codes/{code}", code_page, methods=["GET"]),
    Route("/console/codes/{code}/active", set_active, methods=["POST"]),
    Route("/console/codes/{code}/qr", code_qr, methods=["GET"]),
    Route("/console/advice", advice, methods=["GET"]),
    Route("/console/traffic", traffic, methods=["GET"]),
    Route("/console/traffic.csv", traffic_csv, methods=["GET"]),
    Route("/console/invalid-clicks", invalid_clicks, methods=["GET"]),
    Mount("/console/static", StaticFiles(directory=STATIC), name="console-static"),
]
