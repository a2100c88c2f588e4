"""The seller console over HTTP (in-process): sessions, cross-site refusals, seller scope, and the
numbers and files the API gives for the same query."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from service import sessions
from service.app import create_app
from tests.conftest import ADMIN_HEADERS, UTM, Maker, drain, make_settings, uid
from tests.test_catalog import bearer, issue_key
from tests.test_redirect import BUYER
from tests.test_reports import scripted_mix

BASE = "https://testserver"  # the session cookie is Secure: a client sends it over https only
TOKEN_RE = re.compile(r'name="csrf" value="([^"]+)"')


@contextlib.asynccontextmanager
async def browser(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a cookie jar of its own, as one person's browser."""
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 41000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


def csrf_of(page: httpx.Response) -> str:
    match = TOKEN_RE.search(page.text)
    assert match, page.text
    return html.unescape(match.group(1))


async def sign_in(c: httpx.AsyncClient, credential: str) -> httpx.Response:
    form = await c.get("/console/sign-in")
    assert form.status_code == 200, form.text
    return await c.post("/console/sign-in", data={"csrf": csrf_of(form), "credential": credential})


@contextlib.asynccontextmanager
async def signed_in(app: Starlette, credential: str) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as c:
        r = await sign_in(c, credential)
        assert r.status_code == 303, r.text
        yield c


async def seller_with_key(client: httpx.AsyncClient, seller: Maker, product: Maker) -> tuple[str, str, str]:
    """(seller id, its key, one of its products)."""
    s = await seller()
    p = await product(s["seller_id"])
    return s["seller_id"], await issue_key(client, s["seller_id"]), p["product_id"]


async def page_token(c: httpx.AsyncClient, path: str = "/console/codes/new") -> str:
    r = await c.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r)


def set_cookie(r: httpx.Response, name: str) -> str:
    [header] = [h for h in r.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return header


def with_cookie(c: httpx.AsyncClient, value: str) -> None:
    """The session cookie replaced by `value`, as a person editing it would."""
    c.cookies.clear()
    c.cookies.set(sessions.COOKIE, value)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


# --- sessions --------------------------------------------------------------------------

async def test_sign_in_with_a_seller_key_gives_a_strict_session_cookie(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid, key, _ = await seller_with_key(client, seller, product)
    async with browser(app) as c:
        r = await sign_in(c, key)
        assert r.status_code == 303 and r.headers["location"] == "/console"
        cookie = set_cookie(r, sessions.COOKIE).lower()
        for attribute in ("httponly", "samesite=strict", "secure", "max-age=43200", "path=/console"):
            assert attribute in cookie.split("; "), cookie
        assert key not in cookie  # the key itself never travels in the cookie
        page = await c.get("/console/codes")
        assert page.status_code == 200
        assert sid in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert '<html lang="en">' in page.text


async def test_an_unknown_key_is_refused(app: Starlette) -> None:
    async with browser(app) as c:
        r = await sign_in(c, "sk_not-a-key")
        assert r.status_code == 401
        assert "Unknown seller key or admin token." in r.text
        assert not [h for h in r.headers.get_list("set-cookie") if h.startswith(f"{sessions.COOKIE}=")]
        assert (await c.get("/console/codes")).status_code == 303


async def test_pages_without_a_session_lead_to_sign_in_and_back(app: Starlette) -> None:
    async with browser(app) as c:
        r = await c.get("/console/invalid-clicks?reason=ERR_BOT")
        assert r.status_code == 303
        assert r.headers["location"] == "/console/sign-in?next=%2Fconsole%2Finvalid-clicks%3Freason%3DERR_BOT"
        form = await c.get(r.headers["location"])
        r = await c.post("/console/sign-in", data={"csrf": csrf_of(form), "credential": ADMIN_HEADERS[
            "Authorization"].removeprefix("Bearer "), "next": "/console/invalid-clicks?reason=ERR_BOT"})
        assert r.headers["location"] == "/console/invalid-clicks?reason=ERR_BOT"
    async with browser(app) as c:  # never onward to another site
        form = await c.get("/console/sign-in")
        r = await c.post("/console/sign-in", data={"csrf": csrf_of(form), "next": "//evil.example/console",
                                                   "credential": ADMIN_HEADERS["Authorization"][7:]})
        assert r.headers["location"] == "/console"


async def test_a_tampered_or_expired_cookie_is_refused(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    _, key, _ = await seller_with_key(client, seller, product)
    async with signed_in(app, key) as c:
        good = c.cookies[sessions.COOKIE]
        sid, expires, mac = good.split(".")
        ctx = app.state.ctx
        forged = [
            f"{sid}.{expires}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # the MAC changed
            f"{sid}.{int(expires) + 3600}.{mac}",  # a longer life, same MAC
            sessions.signed(ctx, sid, int(time.time()) - 1),  # properly signed, but expired
            f"{sid}x.{expires}.{mac}",
        ]
        for value in forged:
            with_cookie(c, value)
            r = await c.get("/console/codes")
            assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in"), value
        with_cookie(c, good)
        assert (await c.get("/console/codes")).status_code == 200


async def test_a_deleted_key_ends_its_sessions(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid, key, _ = await seller_with_key(client, seller, product)
    async with signed_in(app, key) as c:
        assert (await c.get("/console/codes")).status_code == 200
        async with app.state.ctx.pool.acquire() as conn:
            await conn.execute("DELETE FROM seller_keys WHERE seller_id = $1", sid)
        assert (await c.get("/console/codes")).status_code == 303


async def test_sign_out_ends_the_session(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    _, key, _ = await seller_with_key(client, seller, product)
    async with signed_in(app, key) as c:
        cookie = c.cookies[sessions.COOKIE]
        r = await c.post("/console/sign-out", data={"csrf": await page_token(c)})
        assert r.status_code == 303 and r.headers["location"] == "/console/sign-in?signed_out=1"
        assert "max-age=0" in set_cookie(r, sessions.COOKIE).lower()
        # the old cookie, replayed, names a session that is gone
        with_cookie(c, cookie)
        assert (await c.get("/console/codes")).status_code == 303


@pytest.fixture(scope="module")
async def other_app() -> AsyncIterator[Starlette]:
    """The same database and Redis, with cookies for plain http and another admin token: as the
    service after MCODE_ADMIN_TOKENS was changed."""
    application = create_app(make_settings(cookie_secure=False, admin_tokens=("another-admin-token-0123456789",)))
    async with LifespanManager(application):
        yield application


async def test_cookie_is_not_secure_when_cookie_secure_is_off(other_app: Starlette) -> None:
    transport = httpx.ASGITransport(app=other_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await sign_in(c, "another-admin-token-0123456789")
        assert r.status_code == 303
        cookie = set_cookie(r, sessions.COOKIE).lower().split("; ")
        assert "secure" not in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert (await c.get("/console/sellers")).status_code == 200


async def test_an_admin_token_taken_out_ends_its_sessions(app: Starlette, other_app: Starlette) -> None:
    async with signed_in(app, ADMIN_HEADERS["Authorization"][7:]) as c:
        assert (await c.get("/console/sellers")).status_code == 200
        cookie = c.cookies[sessions.COOKIE]
    transport = httpx.ASGITransport(app=other_app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        with_cookie(c, cookie)
        assert (await c.get("/console/sellers")).status_code == 303


# --- cross-site requests ---------------------------------------------------------------

async def test_forms_refuse_cross_site_posts(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid, key, pid = await seller_with_key(client, seller, product)
    body = {"product_id": pid, **UTM}
    async with signed_in(app, key) as c:
        token = await page_token(c)
        for data, headers in [
            (body, {}),  # no token
            (body | {"csrf": "x" + token[1:]}, {}),  # another token
            (body | {"csrf": token}, {"origin": "https://evil.example"}),
            (body | {"csrf": token}, {"origin": "null"}),
            (body | {"csrf": token}, {"sec-fetch-site": "cross-site"}),
        ]:
            r = await c.post("/console/codes", data=data, headers=headers)
            assert r.status_code == 403, (data, headers)
            assert "ERR_403" in r.text
        listing = await client.get(f"/v1/codes?seller_id={sid}", headers=ADMIN_HEADERS)
        assert listing.json()["items"] == []
        r = await c.post("/console/codes", data=body | {"csrf": token},
                         headers={"origin": BASE, "sec-fetch-site": "same-origin"})
        assert r.status_code == 303
        # a token is bound to its session: another session's is refused
        async with signed_in(app, key) as other:
            r = await other.post("/console/codes", data=body | {"csrf": token})
            assert r.status_code == 403


async def test_sign_in_refuses_a_form_not_loaded_here(app: Starlette) -> None:
    async with browser(app) as c:
        r = await c.post("/console/sign-in", data={"credential": ADMIN_HEADERS["Authorization"][7:]})
        assert r.status_code == 403
        form = await c.get("/console/sign-in")
        r = await c.post("/console/sign-in", data={"csrf": csrf_of(form), "credential": ADMIN_HEADERS[
            "Authorization"][7:]}, headers={"origin": "https://evil.example"})
        assert r.status_code == 403
        assert sessions.COOKIE not in c.cookies


# --- sellers ---------------------------------------------------------------------------

async def test_a_seller_sees_only_its_own_seller(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker, code: Maker) -> None:
    _, key, _ = await seller_with_key(client, seller, product)
    theirs = await code()
    other = theirs["seller_id"]
    async with signed_in(app, key) as c:
        for path in (f"/console/codes?seller_id={other}", f"/console/traffic?seller_id={other}",
                     f"/console/invalid-clicks?seller_id={other}", f"/console/traffic.csv?seller_id={other}",
                     f"/console/codes/{theirs['code']}", f"/console/codes/{theirs['code']}/qr"):
            r = await c.get(path)
            assert r.status_code == 403, path
            assert "ERR_403" in r.text and "text/html" in r.headers["content-type"]
        r = await c.post(f"/console/codes/{theirs['code']}/active",
                         data={"csrf": await page_token(c), "active": "false"})
        assert r.status_code == 403
    assert (await client.get(f"/v1/codes/{theirs['code']}", headers=ADMIN_HEADERS)).json()["active"] is True


async def test_an_admin_picks_a_seller(app: Starlette, code: Maker) -> None:
    made = await code()
    async with signed_in(app, ADMIN_HEADERS["Authorization"][7:]) as c:
        r = await c.get("/console")
        assert r.status_code == 303 and r.headers["location"] == "/console/sellers"
        r = await c.get("/console/codes")
        assert r.headers["location"] == "/console/sellers"
        r = await c.get(f"/console/sellers?seller_id={uid('none')}")
        assert r.status_code == 422
        assert 'id="e-seller_id"' in r.text and "no seller" in r.text
        r = await c.get(f"/console/sellers?seller_id={made['seller_id']}")
        assert r.status_code == 303
        assert r.headers["location"] == f"/console/traffic?seller_id={made['seller_id']}"
        r = await c.get(f"/console/codes?seller_id={made['seller_id']}")
        assert r.status_code == 200
        assert made["code"] in r.text
        # links keep the admin's choice
        assert f'href="/console/traffic?seller_id={made["seller_id"]}"' in r.text


# --- codes -----------------------------------------------------------------------------

async def test_a_bad_field_is_shown_next_to_it(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    _, key, pid = await seller_with_key(client, seller, product)
    async with signed_in(app, key) as c:
        token = await page_token(c)
        r = await c.post("/console/codes", data={
            "csrf": token, "product_id": pid, **UTM, "utm_source": "has space", "utm_campaign": "x" * 51,
            "utm_content": ""})
        assert r.status_code == 422
        assert re.search(r'<p class="error" id="e-utm_source">printable ASCII only, no spaces</p>', r.text)
        assert re.search(r'<p class="error" id="e-utm_campaign">at most 50 characters</p>', r.text)
        assert re.search(r'<p class="error" id="e-utm_content">required</p>', r.text)
        assert 'aria-invalid="true"' in r.text
        assert 'value="has space"' in r.text  # what was typed stays in the form
        r = await c.post("/console/codes", data={"csrf": token, "product_id": uid("none"), **UTM})
        assert r.status_code == 422 and 'id="e-product_id"' in r.text
        _, _, foreign = await seller_with_key(client, seller, product)
        r = await c.post("/console/codes", data={"csrf": token, "product_id": foreign, **UTM})
        assert r.status_code == 422 and "this product belongs to another seller" in r.text


async def test_create_a_code_then_copy_download_disable(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid, key, pid = await seller_with_key(client, seller, product)
    async with signed_in(app, key) as c:
        token = await page_token(c)
        r = await c.post("/console/codes", data={"csrf": token, "product_id": pid, **UTM, "utm_campaign": "promo1"})
        assert r.status_code == 303
        made = r.headers["location"].split("?")[0].rsplit("/", 1)[1]
        api = (await client.get(f"/v1/codes/{made}", headers=ADMIN_HEADERS)).json()
        assert (api["seller_id"], api["product_id"], api["utm_campaign"]) == (sid, pid, "promo1")
        page = await c.get(r.headers["location"])
        assert page.status_code == 200
        assert f'value="{api["short_url"]}"' in page.text and "data-copy" in page.text
        assert "Code created" in page.text
        assert "is vague" in page.text  # the campaign advice
        svg = await c.get(f"/console/codes/{made}/qr?format=svg&scale=4")
        api_svg = await client.get(f"/v1/codes/{made}/qr?format=svg&scale=4", headers=ADMIN_HEADERS)
        assert svg.headers["content-type"] == "image/svg+xml" and svg.content == api_svg.content
        png = await c.get(f"/console/codes/{made}/qr?format=png&scale=10&download=1")
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
        assert png.headers["content-disposition"] == f'attachment; filename="{made}.png"'
        assert (await c.get(f"/console/codes/{made}/qr?format=gif")).status_code == 422

        r = await c.post(f"/console/codes/{made}/active", data={"csrf": token, "active": "false"})
        assert r.status_code == 303 and r.headers["location"] == f"/console/codes/{made}"
        assert (await client.get(f"/v1/codes/{made}", headers=ADMIN_HEADERS)).json()["active"] is False
        assert "Disabled" in (await c.get(f"/console/codes/{made}")).text
        await c.post(f"/console/codes/{made}/active", data={"csrf": token, "active": "true"})
        assert (await client.get(f"/v1/codes/{made}", headers=ADMIN_HEADERS)).json()["active"] is True

        # the same values again: the existing code, as the API answers
        r = await c.post("/console/codes", data={"csrf": token, "product_id": pid, **UTM, "utm_campaign": "promo1"})
        assert r.headers["location"].startswith(f"/console/codes/{made}")


async def test_codes_list_filters_and_pages(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid, key, pid = await seller_with_key(client, seller, product)
    for n in range(3):
        r = await client.post("/v1/codes", headers=ADMIN_HEADERS, json={
            "seller_id": sid, "product_id": pid, **UTM, "utm_content": f"c{n}", "utm_source": "tt" if n else "ig"})
        assert r.status_code == 201
    async with signed_in(app, key) as c:
        first = await c.get("/console/codes?limit=2")
        api = (await client.get(f"/v1/codes?seller_id={sid}&limit=2", headers=ADMIN_HEADERS)).json()
        for item in api["items"]:
            assert item["code"] in first.text
        [next_link] = re.findall(r'href="([^"]+)" rel="next"', first.text)
        second = await c.get(html.unescape(next_link))
        rest = (await client.get(f"/v1/codes?seller_id={sid}&limit=2&cursor={api['next_cursor']}",
                                 headers=ADMIN_HEADERS)).json()
        [last] = rest["items"]
        assert last["code"] in second.text and 'rel="next"' not in second.text
        only_ig = await c.get("/console/codes?channel=instagram")
        assert only_ig.text.count('<td>instagram</td>') == 1
        bad = await c.get("/console/codes?cursor=nonsense")
        assert bad.status_code == 422 and "not a cursor this API gave out" in bad.text


async def test_advice_as_you_type(app: Starlette) -> None:
    async with signed_in(app, ADMIN_HEADERS["Authorization"][7:]) as c:
        r = await c.get("/console/advice?utm_source=fb&utm_campaign=test")
        advice = r.json()
        assert advice["channel"] == "facebook"
        assert len(advice["warnings"]) == 2 and advice["problems"] == {}
        r = await c.get("/console/advice?utm_source=ig&utm_campaign=ig_202405_kd_summer_sale")
        assert r.json()["warnings"] == [] and r.json()["channel"] == "instagram"
        r = await c.get("/console/advice?utm_campaign=" + "x" * 51)
        assert r.json()["problems"] == {"utm_campaign": "at most 50 characters"}
    async with browser(app) as c:
        assert (await c.get("/console/advice?utm_source=fb")).status_code == 303


async def test_bulk_upload_shows_and_keeps_each_rows_result(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid, key, pid = await seller_with_key(client, seller, product)
    other, _, other_pid = await seller_with_key(client, seller, product)
    text = ("seller_id,product_id,utm_source,utm_medium,utm_campaign,utm_content,utm_term\r\n"
            f"{sid},{pid},ig,social,ig_202405_a,c1,\r\n"
            f"{sid},{pid},ig,social,bad campaign,c2,\r\n"
            f"{other},{other_pid},ig,social,ig_202405_a,c3,\r\n"
            f"{sid},{pid},ig,social,ig_202405_a,c1,\r\n")
    async with signed_in(app, key) as c:
        token = await page_token(c, "/console/codes/bulk")
        r = await c.post("/console/codes/bulk", data={"csrf": token},
                         files={"csv": ("codes.csv", text.encode(), "text/csv")})
        assert r.status_code == 200, r.text
        assert re.search(r"<strong>1</strong> created,\s*<strong>1</strong> already existed,\s*"
                         r"<strong>2</strong> failed", r.text)
        assert "utm_campaign: printable ASCII only, no spaces" in r.text
        assert "this key belongs to another seller" in r.text
        [link] = re.findall(r'href="(/console/codes/bulk/[^"]+\.csv)"', r.text)
        download = await c.get(link)
        assert download.headers["content-type"] == "text/csv; charset=utf-8"
        rows = list(csv.DictReader(io.StringIO(download.text.removeprefix("\ufeff"))))
        assert [bool(row["code"]) for row in rows] == [True, False, False, True]
        assert rows[0]["code"] == rows[3]["code"]
        assert rows[1]["error"].startswith("ERR_422")
        async with signed_in(app, key) as other_session:  # results are the session's own
            assert (await other_session.get(link)).status_code == 404

        r = await c.post("/console/codes/bulk", data={"csrf": token},
                         files={"csv": ("codes.csv", b"seller_id,product_id\r\n", "text/csv")})
        assert r.status_code == 422 and 'id="e-csv"' in r.text and "utm_source: column missing" in r.text
        many = "seller_id,product_id,utm_source,utm_medium,utm_campaign,utm_content\r\n" + (
            f"{sid},{pid},ig,social,ig_202405_a,x\r\n" * 501)
        r = await c.post("/console/codes/bulk", data={"csrf": token},
                         files={"csv": ("codes.csv", many.encode(), "text/csv")})
        assert r.status_code == 413 and "at most 500" in r.text
        r = await c.post("/console/codes/bulk", data={"csrf": token},
                         files={"csv": ("codes.csv", "é".encode("latin-1"), "text/csv")})
        assert r.status_code == 400 and "UTF-8" in r.text
        huge = b"x" * (app.state.ctx.settings.max_csv_bytes + 100_000)
        r = await c.post("/console/codes/bulk", data={"csrf": token}, files={"csv": ("codes.csv", huge, "text/csv")})
        assert r.status_code == 413


# --- reports ---------------------------------------------------------------------------

def numbers(page: str, element_id: str) -> int:
    match = re.search(rf'id="{element_id}">(\d+)<', page)
    assert match, element_id
    return int(match.group(1))


def table_rows(page: str, label: str) -> dict[str, list[str]]:
    """The rows of the table labelled `label`: first cell -> the other cells' text."""
    region = page.split(f'aria-label="{label}"', 1)[1].split("</table>", 1)[0]
    rows: dict[str, list[str]] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", region, re.S)[1:]:
        cells = [re.sub(r"<[^>]+>", " ", cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        cells = [" ".join(html.unescape(cell).split()) for cell in cells]
        rows[cells[0]] = cells[1:]
    return rows


async def test_traffic_shows_the_apis_numbers(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid = await scripted_mix(app, client, seller, product)
    key = await issue_key(client, sid)
    # around the clock's day: a day in Asia/Kolkata is not the UTC one
    first, last = (datetime.now(UTC).date() + timedelta(days=d) for d in (-1, 1))
    query = f"from={first}&to={last}&tz=Asia/Kolkata"
    api = (await client.get(f"/v1/reports/traffic?seller_id={sid}&{query}", headers=bearer(key))).json()
    [totals] = api["rows"]
    async with signed_in(app, key) as c:
        page = (await c.get(f"/console/traffic?{query}")).text
        assert numbers(page, "total-clicks") == totals["clicks"]
        assert numbers(page, "total-valid") == totals["valid_clicks"]
        assert numbers(page, "total-invalid") == sum(totals["invalid_clicks"].values())
        reasons = table_rows(page, "Invalid clicks by reason")
        for reason, count in totals["invalid_clicks"].items():
            assert reasons[reason][0] == str(count)
            assert len(reasons[reason][1]) > 20  # the sentence saying what it means
        funnel = table_rows(page, "Funnel")
        assert [funnel[step][0] for step in ("Valid clicks", "Carts", "Orders", "Paid orders")] == [
            str(totals[k]) for k in ("valid_clicks", "carts", "orders", "paid_orders")]
        money = table_rows(page, "Sales and commission per currency")
        for cur in totals["gmv"]:
            assert money[cur] == [totals[m].get(cur, "0") for m in ("gmv", "commission", "pending_commission")]

        by_campaign = (await client.get(f"/v1/reports/traffic?seller_id={sid}&{query}&group_by=utm_campaign",
                                        headers=bearer(key))).json()["rows"]
        shown = table_rows(page, "Traffic by campaign")
        for row in by_campaign:
            cells = shown[row["utm_campaign"]]
            assert cells[:6] == [str(row[k]) for k in ("clicks", "valid_clicks")] + [
                str(row["clicks"] - row["valid_clicks"])] + [str(row[k]) for k in ("carts", "orders", "paid_orders")]
        assert "Traffic by channel" in page and "Traffic by code" in page
        assert 'id="traffic-series"' in page

        for group_by in ("", "day", "channel", "utm_campaign", "code"):
            ours = await c.get(f"/console/traffic.csv?{query}&group_by={group_by}")
            theirs = await client.get(f"/v1/reports/traffic?seller_id={sid}&{query}&group_by={group_by}&format=csv",
                                      headers=bearer(key))
            assert ours.status_code == 200 and ours.content == theirs.content, group_by
            assert ours.headers["content-disposition"] == theirs.headers["content-disposition"]
            link = f"/console/traffic.csv?from={first}&amp;to={last}&amp;tz=Asia%2FKolkata"
            assert f'href="{link}{f"&amp;group_by={group_by}" if group_by else ""}"' in page, re.findall(
                r'href="(/console/traffic.csv[^"]*)"', page)


async def test_a_long_breakdown_shows_the_groups_with_most_clicks_and_says_how_many_more(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from service import console

    sid = await scripted_mix(app, client, seller, product)
    key = await issue_key(client, sid)
    monkeypatch.setattr(console, "BREAKDOWN_ROWS", 1)
    async with signed_in(app, key) as c:
        page = (await c.get("/console/traffic")).text
    shown = table_rows(page, "Traffic by campaign")
    assert list(shown) == ["ig_202405_a"]  # 6 clicks, against tt_202405_b's 5
    assert "1 more in the CSV" in page


async def test_traffic_breaks_down_by_each_audience_dimension_the_reports_know(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    from service.console import audience
    from service.store import reports as report_sql

    _, key, _ = await seller_with_key(client, seller, product)
    async with signed_in(app, key) as c:
        page = (await c.get("/console/traffic")).text
    for name in report_sql.AUDIENCE:
        shown = f'id="by-{name}-h"' in page
        assert shown == (name in report_sql.KEYS) == (name in audience())


async def test_traffic_bad_input_is_shown_next_to_the_field(app: Starlette) -> None:
    async with signed_in(app, ADMIN_HEADERS["Authorization"][7:]) as c:
        r = await c.get(f"/console/traffic?seller_id={uid('s')}&from=2024-13-01&tz=Mars/Olympus")
        assert r.status_code == 422
        assert 'id="e-tz"' in r.text
        r = await c.get(f"/console/traffic?seller_id={uid('s')}&from=2024-13-01")
        assert r.status_code == 422 and '<p class="error" id="e-from">a date as YYYY-MM-DD</p>' in r.text
        r = await c.get(f"/console/traffic?seller_id={uid('s')}&from=2020-01-01&to=2024-01-01")
        assert r.status_code == 422 and 'id="e-to"' in r.text


async def test_presets_and_default_period(app: Starlette) -> None:
    async with signed_in(app, ADMIN_HEADERS["Authorization"][7:]) as c:
        sid = uid("s")
        page = (await c.get(f"/console/traffic?seller_id={sid}")).text
        assert re.search(r'aria-current="true">30 days<', page)
        for label in ("Today", "7 days", "90 days"):
            assert f">{label}</a>" in page
        assert f'value="{today()}"' in page


async def test_invalid_clicks_ledger_filters_and_pages(
        app: Starlette, client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    sid, key, pid = await seller_with_key(client, seller, product)
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS, json={"seller_id": sid, "product_id": pid, **UTM})
    made = r.json()["code"]
    for n in range(3):
        await client.get(f"/e/{made}", headers={"user-agent": f"curl/8.{n}"})
    await client.get(f"/e/{made}", headers=BUYER)
    await client.get(f"/e/{made}", headers=BUYER)  # a repeat
    await drain(app)
    api = (await client.get(f"/v1/reports/invalid-clicks?seller_id={sid}&limit=2", headers=bearer(key))).json()
    async with signed_in(app, key) as c:
        first = await c.get("/console/invalid-clicks?limit=2")
        for item in api["items"]:
            assert item["user_agent"] in first.text
        [next_link] = re.findall(r'href="([^"]+)" rel="next"', first.text)
        assert "limit=2" in next_link
        second = await c.get(html.unescape(next_link))
        assert second.status_code == 200
        bots = await c.get("/console/invalid-clicks?reason=ERR_BOT")
        assert bots.text.count(">ERR_BOT</abbr>") == 3 and ">ERR_DUP</abbr>" not in bots.text
        dups = await c.get("/console/invalid-clicks?reason=ERR_DUP")
        assert dups.text.count(">ERR_DUP</abbr>") == 1
        bad = await c.get("/console/invalid-clicks?reason=ERR_NOPE")
        assert bad.status_code == 422 and 'id="e-reason"' in bad.text


async def test_static_assets_are_served_here(app: Starlette) -> None:
    async with browser(app) as c:
        for name, kind in (("console.css", "text/css"), ("console.js", "javascript"),
                           ("uPlot.iife.min.js", "javascript"), ("uPlot.min.css", "text/css")):
            r = await c.get(f"/console/static/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"], name


def test_reason_sentences_cover_every_reason() -> None:
    from service.console import reason_sentences
    from service.store.reports import REASONS

    sentences = reason_sentences(3600)
    assert set(sentences) == set(REASONS)
    assert "1 hour" in sentences["ERR_DUP"]
    assert "90 minutes" in reason_sentences(5400)["ERR_DUP"]
