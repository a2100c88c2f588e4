import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import ADMIN_HEADERS, Maker, drain, stored_click

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
BUYER = {"user-agent": CHROME, "accept-language": "en-US,en;q=0.9", "accept": "text/html"}


def click_id_of(response: httpx.Response) -> str:
    return parse_qs(urlsplit(response.headers["location"]).query)["mc_click"][0]


async def clicks_of(app: Starlette, code: str) -> list[dict[str, Any]]:
    await drain(app)
    async with app.state.ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM clicks WHERE code = $1 ORDER BY clicked_at", code)
    return [dict(r) for r in rows]


async def test_valid_click_redirects_with_utm_click_id_and_cookie(
    app: Starlette, client: httpx.AsyncClient, code: Maker
) -> None:
    c = await code(utm_term="red shoes".replace(" ", "_"))
    r = await client.get(f"/e/{c['code']}", headers=BUYER | {"referer": "https://instagram.com/p/1"})
    assert r.status_code == 302
    click_id = click_id_of(r)
    assert r.headers["location"] == (
        "https://www.aliexpress.com/item/100500.html?spm=a2g0o&utm_source=ig&utm_medium=social"
        f"&utm_campaign=ig_202405_kd_summer_sale&utm_content=reel1&utm_term=red_shoes&mc_click={click_id}#reviews"
    )
    assert r.headers["cache-control"] == "no-store"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("mc_did=")
    for attr in ("Max-Age=31536000", "Path=/", "HttpOnly", "SameSite=Lax", "Secure"):
        assert attr in cookie
    stored = await clicks_of(app, c["code"])
    assert len(stored) == 1
    row = stored[0]
    assert row["click_id"] == click_id
    assert row["reason"] is None
    assert row["seller_id"] == c["seller_id"]
    assert row["ip"] == "198.51.100.0"
    assert row["user_agent"] == CHROME
    assert row["referer"] == "https://instagram.com/p/1"
    device_id = cookie.split(";")[0].split("=", 1)[1]
    assert row["device_hash"] != device_id and device_id not in row["device_hash"]


async def test_code_utm_replaces_product_utm(
    app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker
) -> None:
    s = await seller()
    p = await product(s["seller_id"], url="https://aliexpress.com/i.html?utm_source=old&utm_term=old&x=1")
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS, json={
        "seller_id": s["seller_id"], "product_id": p["product_id"], "utm_source": "vk", "utm_medium": "post",
        "utm_campaign": "vk_202405_a", "utm_content": "c"})
    r = await client.get(f"/e/{r.json()['code']}", headers=BUYER)
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["utm_source"] == ["vk"]
    assert "utm_term" not in query  # the code has none, and the product's stale one is not passed on
    assert query["x"] == ["1"]


async def test_forged_and_unknown_codes(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    forged = c["code"][:-1] + ("a" if c["code"][-1] != "a" else "b")
    r = await client.get(f"/e/{forged}", headers=BUYER)
    assert r.status_code == 400
    assert "ERR_400" in r.text and r.headers["content-type"].startswith("text/html")
    r = await client.get(f"/e/{forged}", headers=BUYER | {"accept": "application/json"})
    assert r.json()["error"]["code"] == "ERR_400"
    unknown = app.state.ctx.signer.sign("Zz9Zz9Zz")
    r = await client.get(f"/e/{unknown}", headers=BUYER | {"accept": "application/json"})
    assert r.status_code == 400
    for code_text in (forged, unknown):
        rows = await clicks_of(app, code_text)
        assert [row["reason"] for row in rows][-1:] == ["ERR_400"]


async def test_error_page_speaks_the_buyers_language(client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    await client.patch(f"/v1/codes/{c['code']}", json={"active": False}, headers=ADMIN_HEADERS)
    url = f"/e/{c['code']}"
    for accept_language, lang, direction, sentence in [
        ("es-ES,es;q=0.9,en;q=0.5", "es", "ltr", "El vendedor ha desactivado este enlace."),
        ("sv;q=0.9, he;q=0.8", "he", "rtl", "המוכר השבית את הקישור הזה."),
        ("tlh", "en", "ltr", "This link has been switched off by the seller."),
    ]:
        r = await client.get(url, headers=BUYER | {"accept-language": accept_language})
        assert r.status_code == 410
        assert r.headers["content-language"] == lang
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["cache-control"] == "no-store"
        assert f"<html lang={lang} dir={direction}>" in r.text
        assert sentence in r.text and "ERR_410" in r.text
        assert '<a href="https://www.aliexpress.com/"' in r.text
    r = await client.get(url, headers=BUYER | {"accept-language": "ru", "accept": "application/json"})
    assert r.json() == {"error": {"code": "ERR_410", "message": "This link has been switched off by the seller."}}
    assert "content-language" not in r.headers


async def test_refusals_in_spec_order(app: Starlette, client: httpx.AsyncClient, code: Maker,
                                      seller: Maker, product: Maker) -> None:
    c = await code()
    sid, pid = c["seller_id"], c["product_id"]
    url = f"/e/{c['code']}"
    json_buyer = BUYER | {"accept": "application/json"}
    await product(sid, product_id=pid, stock=0)
    assert (await client.get(url, headers=json_buyer)).json()["error"]["code"] == "ERR_404"
    await seller(seller_id=sid, status="frozen")
    assert (await client.get(url, headers=json_buyer)).json()["error"]["code"] == "ERR_403"
    await client.patch(f"/v1/codes/{c['code']}", json={"active": False}, headers=ADMIN_HEADERS)
    r = await client.get(url, headers=json_buyer)
    assert (r.status_code, r.json()["error"]["code"]) == (410, "ERR_410")
    # a bot gets the step's reason too: refusals are judged before bots
    r = await client.get(url, headers={"user-agent": "curl/8.0"})
    assert r.status_code == 410
    await client.patch(f"/v1/codes/{c['code']}", json={"active": True}, headers=ADMIN_HEADERS)
    await seller(seller_id=sid, status="active", verified=False)
    assert (await client.get(url, headers=json_buyer)).status_code == 403
    await seller(seller_id=sid)
    await product(sid, product_id=pid, status="delisted")
    assert (await client.get(url, headers=json_buyer)).status_code == 404
    await product(sid, product_id=pid)
    assert (await client.get(url, headers=json_buyer)).status_code == 302
    reasons = [row["reason"] for row in await clicks_of(app, c["code"])]
    assert reasons == ["ERR_404", "ERR_403", "ERR_410", "ERR_410", "ERR_403", "ERR_404", None]


BOT_REQUESTS = [
    {"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"},
    {"user-agent": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"},
    {"user-agent": "TelegramBot (like TwitterBot)"},
    {"user-agent": "WhatsApp/2.23.20.0 A"},
    {"user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36"},
    {"user-agent": "python-requests/2.31.0"},
    {"user-agent": "curl/8.4.0"},
    {"user-agent": ""},
    {},
]
PREFETCHES = [
    BUYER | {"sec-purpose": "prefetch;prerender"},
    BUYER | {"sec-purpose": "prefetch"},
    BUYER | {"purpose": "prefetch"},
    BUYER | {"x-moz": "prefetch"},
    {"user-agent": "curl/8.4.0", "sec-purpose": "prefetch"},  # prefetch is judged before bots
]


@pytest.mark.parametrize("headers", BOT_REQUESTS)
async def test_bots_are_redirected_but_flagged(
    app: Starlette, client: httpx.AsyncClient, code: Maker, headers: dict[str, str]
) -> None:
    c = await code()
    r = await client.get(f"/e/{c['code']}", headers=headers)
    assert r.status_code == 302
    bot_click = click_id_of(r)
    # a bot never sets the dedup mark: the buyer's click right after is valid
    r = await client.get(f"/e/{c['code']}", headers=BUYER)
    assert click_id_of(r) != bot_click
    rows = await clicks_of(app, c["code"])
    assert [row["reason"] for row in rows] == ["ERR_BOT", None]


@pytest.mark.parametrize("headers", PREFETCHES)
async def test_prefetch_is_answered_503_so_the_real_click_comes_later(
    app: Starlette, client: httpx.AsyncClient, code: Maker, headers: dict[str, str]
) -> None:
    c = await code()
    r = await client.get(f"/e/{c['code']}", headers=headers)
    assert r.status_code == 503
    assert r.headers["cache-control"] == "no-store"
    assert "location" not in r.headers and "set-cookie" not in r.headers
    assert r.content == b""
    # never counts, never sets the dedup mark: the buyer's click right after is valid and its own
    r = await client.get(f"/e/{c['code']}", headers=BUYER)
    assert r.status_code == 302
    rows = await clicks_of(app, c["code"])
    assert [(row["reason"], row["original_click_id"]) for row in rows] == [("ERR_PREFETCH", None), (None, None)]
    assert rows[1]["click_id"] == click_id_of(r)


async def test_prefetch_of_a_refused_link_carries_the_refusal(
    app: Starlette, client: httpx.AsyncClient, code: Maker
) -> None:
    c = await code()
    await client.patch(f"/v1/codes/{c['code']}", json={"active": False}, headers=ADMIN_HEADERS)
    r = await client.get(f"/e/{c['code']}", headers=PREFETCHES[0])
    assert r.status_code == 410
    assert [row["reason"] for row in await clicks_of(app, c["code"])] == ["ERR_410"]


async def test_head_prefetch_is_a_prefetch(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    r = await client.head(f"/e/{c['code']}", headers=PREFETCHES[1])
    assert r.status_code == 503
    assert [row["reason"] for row in await clicks_of(app, c["code"])] == ["ERR_PREFETCH"]


async def test_head_is_a_bot(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    r = await client.head(f"/e/{c['code']}", headers=BUYER)
    assert r.status_code == 302
    assert [row["reason"] for row in await clicks_of(app, c["code"])] == ["ERR_BOT"]


async def test_repeat_with_and_without_cookie_is_dup_with_first_click_id(
    app: Starlette, client: httpx.AsyncClient, code: Maker
) -> None:
    c = await code()
    url = f"/e/{c['code']}"
    first = await client.get(url, headers=BUYER)
    first_id = click_id_of(first)
    cookie = first.headers["set-cookie"].split(";")[0]
    client.cookies.clear()
    with_cookie = await client.get(url, headers=BUYER | {"cookie": cookie, "user-agent": IPHONE})
    without_cookie = await client.get(url, headers=BUYER)
    assert click_id_of(with_cookie) == first_id
    assert click_id_of(without_cookie) == first_id
    other_device = await client.get(url, headers=BUYER | {"user-agent": IPHONE})
    assert click_id_of(other_device) != first_id
    rows = await clicks_of(app, c["code"])
    assert [(r["reason"], r["original_click_id"]) for r in rows] == [
        (None, None), ("ERR_DUP", first_id), ("ERR_DUP", first_id), (None, None)]
    assert rows[1]["click_id"] != first_id
    # the same device on another code is a first click there
    other = await code()
    assert click_id_of(await client.get(f"/e/{other['code']}", headers=BUYER)) != first_id


async def test_malformed_cookie_is_replaced(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    r = await client.get(f"/e/{c['code']}", headers=BUYER | {"cookie": "mc_did=<script>"})
    assert r.headers["set-cookie"].startswith("mc_did=")
    assert "<script>" not in r.headers["set-cookie"]


async def test_long_user_agent_and_referer_are_cut(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    r = await client.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": CHROME + "x" * 1000,
                                                              "referer": "https://a.example/" + "y" * 1000})
    await drain(app)
    row = await stored_click(app, click_id_of(r))
    assert row is not None
    assert len(row["user_agent"]) == 512 and len(row["referer"]) == 512


async def test_metrics_count_clicks_by_reason(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    def value(text: str, reason: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(f'mcode_clicks_total{{reason="{reason}"}}'))
        return float(line.rsplit(" ", 1)[1])

    c = await code()
    before = (await client.get("/metrics")).text
    device = uuid.uuid4().hex[:22]  # a device of its own: the click is valid, not a repeat
    await client.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": IPHONE, "cookie": f"mc_did={device}"})
    await client.get(f"/e/{c['code']}", headers={"user-agent": "curl/8"})
    await client.get("/e/notacode", headers=BUYER)
    await client.get(f"/e/{c['code']}", headers=BUYER | {"sec-purpose": "prefetch"})
    after = (await client.get("/metrics")).text
    assert value(after, "valid") == value(before, "valid") + 1
    assert value(after, "ERR_BOT") == value(before, "ERR_BOT") + 1
    assert value(after, "ERR_PREFETCH") == value(before, "ERR_PREFETCH") + 1
    assert value(after, "ERR_400") == value(before, "ERR_400") + 1
    assert "mcode_redirect_duration_seconds_count" in after


async def test_host_no_longer_allowed_is_404(code: Maker) -> None:
    from asgi_lifespan import LifespanManager

    from service.app import create_app
    from tests.conftest import make_settings

    c = await code()
    narrowed = create_app(make_settings(allowed_hosts=("shop.example.org",),
                                        fallback_url="https://shop.example.org/"))
    async with LifespanManager(narrowed):
        transport = httpx.ASGITransport(app=narrowed, client=("198.51.100.50", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as buyer:
            r = await buyer.get(f"/e/{c['code']}", headers=BUYER | {"accept": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "ERR_404")


def test_read_headers_takes_what_the_redirect_reads() -> None:
    from service.redirect import read_headers

    raw = [(b"host", b"x"), (b"user-agent", b"first"), (b"user-agent", b"second"), (b"cookie", b"a=1"),
           (b"cookie", b"mc_did=abc"), (b"referer", "https://b\xfccher.example/".encode("latin-1"))]
    assert read_headers(raw) == {"user-agent": "first", "cookie": "a=1; mc_did=abc",
                                 "referer": "https://b\xfccher.example/"}


async def test_cookie_in_a_second_cookie_header_is_the_device(client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    device = "D" * 22
    r = await client.get(f"/e/{c['code']}", headers=[*BUYER.items(), ("cookie", "theme=dark"),
                                                      ("cookie", f"mc_did={device}")])
    assert r.headers["set-cookie"].startswith(f"mc_did={device};")


HOSTILE_PATHS = ["%00", "A\x00B", "x" * 5000, "%E2%82%AC%FF%FE", "\udcff", "..%2F..%2Fetc", "%0d%0aSet-Cookie:x=1"]


@pytest.mark.parametrize("code_text", HOSTILE_PATHS)
async def test_hostile_buyer_requests_are_answered_and_logged(app: Starlette, code: Maker, code_text: str) -> None:
    """Raw ASGI, as a lenient HTTP server could hand them over: NUL and non-UTF-8 bytes in the
    code, headers and cookie. Every one is answered from the SPEC's table and stored once."""
    c = await code()
    refused_sql = "SELECT count(*) FROM clicks WHERE reason = 'ERR_400' AND ip = '198.51.100.0'"
    await drain(app)
    async with app.state.ctx.pool.acquire() as conn:
        refused_before = await conn.fetchval(refused_sql)
    answers = []
    for path in (f"/e/{code_text}", f"/e/{c['code']}"):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http", "method": "GET", "path": path, "raw_path": path.encode("utf-8", "surrogateescape"),
            "query_string": b"", "client": ("198.51.100.77", 5), "headers": [
                (b"user-agent", CHROME.encode() + b"\x00\xff" + b"u" * 600), (b"referer", b"https://r.example/\x00"),
                (b"cookie", b"mc_did=\x00bad; mc_did=\xff"), (b"accept-language", b"\x00"),
                (b"x-forwarded-for", b"\x00, 1.2.3.4"), (b"accept", b"\xff\x00"),
            ],
        }
        await app(scope, receive, send)
        answers.append(sent[0]["status"])
    assert answers == [400, 302]
    rows = await clicks_of(app, c["code"])
    assert [r["reason"] for r in rows] == [None]
    assert rows[0]["user_agent"].startswith(CHROME + "\ufffd\xff") and len(rows[0]["user_agent"]) == 512
    assert rows[0]["referer"] == "https://r.example/\ufffd"
    async with app.state.ctx.pool.acquire() as conn:
        assert await conn.fetchval(refused_sql) == refused_before + 1
