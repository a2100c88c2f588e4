"""GET/HEAD /e/{code}: resolve, judge, log, answer — the hot path."""

from __future__ import annotations

import re
import time

from starlette.requests import Request
from starlette.responses import Response

from service import metrics
from service.clicks import VALID, Click, new_click_id, now_ms
from service.context import Context
from service.devices import device_hash, truncate_ip
from service.errors import BUYER_SENTENCES, ApiError, buyer_error

MAX_TEXT = 512
# What is kept of a code that is not ours: no separators or control characters reach the log.
_FOREIGN = re.compile(r"[^A-Za-z0-9_-]")
NO_STORE = "no-store"
_COUNTERS = {reason: metrics.CLICKS.labels(reason or "valid") for reason in ("", *metrics.CLICK_REASONS[1:])}


async def redirect(request: Request) -> Response:
    started = time.perf_counter()
    ctx: Context = request.app.state.ctx
    code: str = request.path_params["code"]
    headers = request.headers
    reason, record = "ERR_400", None
    if ctx.signer.verify(code):  # a forged or mangled code costs no I/O at all
        try:
            record, host_allowed = await ctx.records.get(code)
        except LookupError:
            return buyer_error(request, ApiError("ERR_503", "the service cannot resolve this link right now"))
        if record is None:
            reason = "ERR_400"
        elif not record.active:
            reason = "ERR_410"
        elif not record.seller_ok:
            reason = "ERR_403"
        elif not record.sellable or not host_allowed:
            reason = "ERR_404"
        elif ctx.bots.is_bot(request.method, headers):
            reason = "ERR_BOT"
        else:
            reason = VALID
    user_agent = headers.get("user-agent", "")
    peer = request.client.host if request.client else ""
    ip = ctx.devices.client_ip(peer, headers.get("x-forwarded-for"))
    device, _ = ctx.devices.device_id(
        request.cookies.get("mc_did"), ip, user_agent, headers.get("accept-language", "")
    )
    at = now_ms()
    click = Click(
        new_click_id(at), at, code if record else _FOREIGN.sub("?", code[:64]), record.seller_id if record else None,
        record.product_id if record else None, reason, device_hash(device), truncate_ip(ip),
        user_agent[:MAX_TEXT], headers.get("referer", "")[:MAX_TEXT],
    )
    try:
        first = await ctx.click_log.log(click, dedup=reason == VALID)
    except Exception:  # neither Redis nor the local spool took the click: do not pretend
        return buyer_error(request, ApiError("ERR_503", "the service cannot record this click right now"))
    if first:
        reason = "ERR_DUP"
    _COUNTERS[reason].inc()
    if record is None or reason not in (VALID, "ERR_BOT", "ERR_DUP"):
        response = buyer_error(request, ApiError(reason, BUYER_SENTENCES[reason]),
                               headers={"cache-control": NO_STORE})
    else:
        location = f"{record.head}{first or click.click_id}{record.fragment}"
        response = Response(status_code=302, headers={
            "location": location, "cache-control": NO_STORE, "set-cookie": ctx.devices.cookie(device),
        })
    metrics.REDIRECT_SECONDS.observe(time.perf_counter() - started)
    return response
