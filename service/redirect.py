"""GET/HEAD /e/{code}: resolve, judge, log, answer — the hot path.

It works on the raw ASGI scope and sends raw ASGI messages: Starlette's Request, Headers and
Response objects cost more per click than the judgement itself (each header look-up scans and
decodes every header; see loadtests/RESULTS.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.requests import cookie_parser
from starlette.types import Receive, Scope, Send

from service import metrics
from service.bots import is_prefetch
from service.clicks import VALID, Click, now_ms
from service.context import Context
from service.devices import COOKIE, device_hash, truncate_ip

MAX_TEXT = 512
# What is kept of a code that is not ours: no separators or control characters reach the log.
_FOREIGN = re.compile(r"[^A-Za-z0-9_-]")
# The only request headers the redirect reads (ASGI gives names in lower case).
READ = {name.encode(): name for name in (
    "user-agent", "cookie", "x-forwarded-for", "accept-language", "referer", "accept",
    "sec-purpose", "purpose", "x-moz",  # prefetch signals
)}
REDIRECTED = (VALID, "ERR_BOT", "ERR_DUP")


def _storable(text: str) -> str:
    # Postgres text holds no NUL: a header carrying one must not cost the click its row.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers the redirect reads, decoded once; a repeated header keeps its first value,
    but cookies from several Cookie headers are joined, as a browser would have sent them."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = READ.get(name)
        if key is None:
            continue
        if key not in out:
            out[key] = value.decode("latin-1")
        elif key == "cookie":
            out[key] += "; " + value.decode("latin-1")
    return out


def via_of(query: bytes) -> str:
    """`qr` when the link was opened from its QR code (which encodes `?qr=1`), else `link`."""
    if b"qr" not in query:
        return "link"
    return "qr" if "1" in parse_qs(query.decode("latin-1")).get("qr", ()) else "link"


async def redirect(ctx: Context, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    code: str = scope["path"][3:]
    headers = read_headers(scope["headers"])
    reason, record = "ERR_400", None
    if ctx.signer.verify(code):  # a forged or mangled code costs no I/O at all
        try:
            record, host_allowed = await ctx.records.get(code)
        except LookupError:
            return await ctx.pages.send(send, headers, "ERR_503")  # the code is known nowhere we can reach
        if record is None:
            reason = "ERR_400"
        elif not record.active:
            reason = "ERR_410"
        elif not record.seller_ok:
            reason = "ERR_403"
        elif not record.sellable or not host_allowed:
            reason = "ERR_404"
        elif is_prefetch(headers):
            reason = "ERR_PREFETCH"
        elif ctx.bots.is_bot(scope["method"], headers):
            reason = "ERR_BOT"
        else:
            reason = VALID
    user_agent = headers.get("user-agent", "")
    client = scope.get("client")
    ip = ctx.devices.client_ip(client[0] if client else "", headers.get("x-forwarded-for"))
    device, _ = ctx.devices.device_id(
        cookie_parser(headers.get("cookie", "")).get(COOKIE), ip, user_agent, headers.get("accept-language", "")
    )
    at, device_key = now_ms(), device_hash(device)
    code = code if record else _FOREIGN.sub("?", code[:64])
    click = Click(
        ctx.click_log.new_click_id(at, code, device_key), at, code, record.seller_id if record else None,
        record.product_id if record else None, reason, device_key, truncate_ip(ip),
        _storable(user_agent[:MAX_TEXT]), _storable(headers.get("referer", "")[:MAX_TEXT]),
        via=via_of(scope.get("query_string", b"")),
    )
    try:
        first = await ctx.click_log.log(click, dedup=reason == VALID)
    except Exception:  # neither Redis nor the local spool took the click: do not pretend
        return await ctx.pages.send(send, headers, "ERR_503")
    if first:
        reason = "ERR_DUP"
    if reason == "ERR_PREFETCH":  # a 503 makes the browser drop its speculation and ask again on the click
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"cache-control", b"no-store"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    elif record is None or reason not in REDIRECTED:
        await ctx.pages.send(send, headers, reason)
    else:
        location = f"{record.head}{first or click.click_id}{record.fragment}"
        await send({"type": "http.response.start", "status": 302, "headers": [
            (b"location", location.encode("latin-1")), (b"cache-control", b"no-store"),
            (b"set-cookie", ctx.devices.cookie(device).encode("latin-1")), (b"content-length", b"0"),
        ]})
        await send({"type": "http.response.body", "body": b""})
    metrics.REDIRECTS.add(reason or "valid", time.perf_counter() - started)


class Endpoint:
    """/e/{code} as a Starlette route, so the router answers other methods with 405; GET and HEAD
    reach `redirect` straight from app.HotPath, ahead of the router."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await redirect(scope["app"].state.ctx, scope, receive, send)
