"""A real browser (the system's Chromium, driven by Playwright) against the service served over
real HTTP: the buyer's click from a bio page, repeats, the browser's speculative fetches, and the
error pages a buyer reads. The product and bio pages are served over https on this machine, under
their real host names (Chromium resolves them here: see tests/browser.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.app import create_app
from tests import browser
from tests.browser import DESKTOP_CHROME, KOL_HOST, PRODUCT_HOST, WAIT_S, Pages, Recorder, Seen
from tests.conftest import ADMIN_HEADERS, UTM, drain, make_settings, uid
from tests.test_events import order, signed

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

UNAVAILABLE = browser.unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"browser tests skipped: {UNAVAILABLE}")

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / ".local" / "screenshots"  # gitignored; for a person to look at
PRODUCT_URL = f"https://{PRODUCT_HOST}/item/100500.html?spm=a2g0o#reviews"
FALLBACK_URL = "https://www.aliexpress.com/"  # MCODE_FALLBACK_URL's default


@dataclass
class Live:
    app: Any  # the service's application, as drain() wants it
    public_url: str
    service: Recorder  # every request the service answered
    site: Recorder  # the https site holding the product and bio pages
    pages: Pages
    site_port: int
    near: Pages  # a plain-http site on the service's own host: the same site as the service
    near_url: str
    api: httpx.AsyncClient  # the service's API over real HTTP, as admin


@pytest.fixture(scope="module")
async def live() -> AsyncIterator[Live]:
    service_sock, site_sock, near_sock = browser.free_socket(), browser.free_socket(), browser.free_socket()
    public_url = f"http://127.0.0.1:{service_sock.getsockname()[1]}"
    near_url = f"http://127.0.0.1:{near_sock.getsockname()[1]}"
    service = Recorder(create_app(make_settings(public_url=public_url, cookie_secure=False)))
    pages, near = Pages(), Pages()
    site = Recorder(pages)
    with browser.temp_dir() as tmp:
        cert = browser.certificate(Path(tmp))
        async with (
            browser.serve(service, service_sock, lifespan="on"),
            browser.serve(site, site_sock, ssl=cert),
            browser.serve(near, near_sock),
            httpx.AsyncClient(base_url=public_url, headers=ADMIN_HEADERS) as api,
        ):
            yield Live(service.app, public_url, service, site, pages, site_sock.getsockname()[1], near, near_url, api)


@pytest.fixture(scope="module")
async def chromium(live: Live) -> AsyncIterator[Browser]:
    async with browser.launched(live.site_port) as launched:
        yield launched


@pytest.fixture
async def context(chromium: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile: no cookies, a desktop Chrome's User-Agent and language."""
    ctx = await chromium.new_context(user_agent=DESKTOP_CHROME, locale="en-US")
    ctx.set_default_timeout(WAIT_S * 1000)
    try:
        yield ctx
    finally:
        await ctx.close()


async def new_code(live: Live, **fields: Any) -> dict[str, Any]:
    seller_id, product_id = uid("s"), uid("p")
    r = await live.api.put(f"/v1/sellers/{seller_id}", json={
        "name": "Kid Shop", "status": "active", "verified": True, "affiliate_enabled": True})
    assert r.status_code == 201, r.text
    r = await live.api.put(f"/v1/products/{product_id}", json={
        "seller_id": seller_id, "url": PRODUCT_URL, "category": "toys", "status": "listed", "stock": 10})
    assert r.status_code == 201, r.text
    r = await live.api.post("/v1/codes", json={"seller_id": seller_id, "product_id": product_id, **UTM} | fields)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    assert data["short_url"] == f"{live.public_url}/e/{data['code']}"
    return data


def bio_page(live: Live, short_url: str, head: str = "") -> str:
    """A bio page on the KOL's site holding the buyer's link; its URL."""
    path = f"/kol/{uid('bio')}"
    # referrerpolicy: the service here is plain http, and from an https page Chromium's default
    # policy would send no Referer at all to it
    live.pages.html[path] = (f"<!doctype html><title>bio</title>{head}"
                             f"<p>my picks: <a id=buy href='{short_url}' referrerpolicy=origin>the red shoes</a>")
    return f"https://{KOL_HOST}{path}"


async def click_through(page: Page) -> dict[str, list[str]]:
    """The buyer clicks the link; the product page's query, once it is on screen."""
    await page.click("#buy")
    await page.wait_for_url(f"https://{PRODUCT_HOST}/**")
    landed = urlsplit(page.url)
    assert (landed.path, landed.fragment) == ("/item/100500.html", "reviews")
    return parse_qs(landed.query)


async def clicks_of(live: Live, code: str) -> list[dict[str, Any]]:
    await drain(live.app)
    async with live.app.state.ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM clicks WHERE code = $1 ORDER BY clicked_at, click_id", code)
    return [dict(r) for r in rows]


async def post_order(live: Live, click_id: str) -> dict[str, Any]:
    body = json.dumps(order(click_id)).encode()
    r = await live.api.post("/v1/events", content=body, headers=signed(body))
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def test_a_click_lands_on_the_product_with_utm_click_id_and_cookie(live: Live, context: BrowserContext) -> None:
    c = await new_code(live)
    page = await context.new_page()
    await page.goto(bio_page(live, c["short_url"]))
    query = await click_through(page)
    assert query["spm"] == ["a2g0o"]
    for name, value in UTM.items():
        assert query[name] == [value]
    [click_id] = query["mc_click"]

    [cookie] = await context.cookies(live.public_url)
    assert cookie["name"] == "mc_did" and cookie["value"]
    assert (cookie["domain"], cookie["path"]) == ("127.0.0.1", "/")  # the service's own host, no wider
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Lax", False)
    assert cookie["expires"] - time.time() > 364 * 86400  # Max-Age one year, not a session cookie

    [row] = await clicks_of(live, c["code"])
    assert (row["click_id"], row["reason"]) == (click_id, None)
    assert row["user_agent"] == DESKTOP_CHROME
    assert row["referer"] == f"https://{KOL_HOST}/"


async def test_a_second_click_from_the_same_browser_is_a_repeat(live: Live, context: BrowserContext) -> None:
    c = await new_code(live)
    page = await context.new_page()
    bio = bio_page(live, c["short_url"])
    await page.goto(bio)
    [first] = (await click_through(page))["mc_click"]
    await page.goto(bio)
    [again] = (await click_through(page))["mc_click"]
    assert again == first  # so an order placed after the second click still finds the first

    second = live.service.to(f"/e/{c['code']}")[-1]
    assert "mc_did=" in second.headers.get("cookie", "")  # the device is known by its cookie now
    rows = await clicks_of(live, c["code"])
    assert [(r["reason"], r["original_click_id"]) for r in rows] == [(None, None), ("ERR_DUP", first)]
    assert rows[0]["click_id"] == first


def speculation_rules(action: str, url: str) -> str:
    rules = {action: [{"source": "list", "urls": [url], "eagerness": "immediate"}]}
    return f"<script type=speculationrules>{json.dumps(rules)}</script>"


SPECULATIONS: dict[str, tuple[Callable[[str], str], str]] = {
    # how the bio page asks for it, and what Chromium's speculative request says it is (Sec-Purpose)
    "speculation-rules-prefetch": (lambda url: speculation_rules("prefetch", url), "prefetch"),
    # Chromium never prerenders a page of another site, and never at all for a page that has a
    # DevTools session (Playwright's): what reaches the service is the prefetch a prerender starts
    # with; test_a_prerender_is_refused... covers a prerender made in full
    "speculation-rules-prerender": (lambda url: speculation_rules("prerender", url), "prefetch;prerender"),
    "link-rel-prefetch": (lambda url: f"<link rel=prefetch href='{url}'>", "prefetch"),
}


def assert_thrown_away(speculative: Seen) -> None:
    """The SPEC's answer to a speculative fetch: nothing a browser could keep and replay on the click."""
    assert speculative.status == 503, (speculative.status, speculative.response_headers)
    answer = speculative.response_headers
    assert answer.get("cache-control") == "no-store"
    assert "location" not in answer and "set-cookie" not in answer
    assert speculative.body == b""


@pytest.mark.parametrize("kind", list(SPECULATIONS))
async def test_a_speculative_fetch_is_refused_and_the_real_click_counts(
    live: Live, context: BrowserContext, kind: str
) -> None:
    head, purpose = SPECULATIONS[kind]
    c = await new_code(live)
    path = f"/e/{c['code']}"
    page = await context.new_page()
    given_up = await prefetch_given_up(context, page)
    await page.goto(bio_page(live, c["short_url"], head(c["short_url"])))

    speculative = await live.service.wait_for(lambda s: s.path == path)
    assert speculative.headers.get("sec-purpose") == purpose, speculative.headers
    assert "cookie" not in speculative.headers
    assert_thrown_away(speculative)
    if kind.startswith("speculation-rules"):
        # the click is to find the prefetch already given up, not race it
        async with asyncio.timeout(WAIT_S):
            await given_up.wait()

    query = await click_through(page)
    for name, value in UTM.items():
        assert query[name] == [value]
    [click_id] = query["mc_click"]
    requests = live.service.to(path)
    assert [s.headers.get("sec-purpose") for s in requests] == [purpose, None], "the click must reach the service"

    rows = await clicks_of(live, c["code"])
    assert [r["reason"] for r in rows] == ["ERR_PREFETCH", None]
    assert rows[1]["click_id"] == click_id
    answer = await post_order(live, click_id)
    assert (answer["status"], answer["reason"], answer["code"]) == ("attributed", None, c["code"])


async def prefetch_given_up(context: BrowserContext, page: Page) -> asyncio.Event:
    """Set when Chromium reports (DevTools' Preload domain) that a prefetch of the page failed."""
    failed = asyncio.Event()
    cdp = await context.new_cdp_session(page)
    cdp.on("Preload.prefetchStatusUpdated", lambda event: failed.set() if event["status"] == "Failure" else None)
    await cdp.send("Preload.enable")
    return failed


async def test_a_prerender_is_refused_and_the_real_click_counts(live: Live, tmp_path: Path) -> None:
    """A prerender made in full: Chromium prerenders only a page of the linking page's own site,
    and only with no Playwright session on it (see browser.DevTools)."""
    c = await new_code(live)
    path = f"/e/{c['code']}"
    live.near.html["/bio"] = (f"<!doctype html><title>bio</title>{speculation_rules('prerender', c['short_url'])}"
                              f"<a id=buy href='{c['short_url']}'>the red shoes</a>")
    async with browser.chromium_with_devtools(live.site_port, tmp_path / "profile") as (tools, page):
        await tools.send("Preload.enable", session=page)
        await tools.send("Page.navigate", {"url": f"{live.near_url}/bio"}, page)
        await tools.event("Preload.prerenderStatusUpdated", lambda p: p["status"] == "Running")
        speculative = await live.service.wait_for(lambda s: s.path == path)
        assert speculative.headers.get("sec-purpose") == "prefetch;prerender", speculative.headers
        assert_thrown_away(speculative)
        await tools.event("Preload.prerenderStatusUpdated", lambda p: p["status"] == "Failure")
        await tools.send("Runtime.evaluate", {"expression": "document.getElementById('buy').click()"}, page)
        try:
            click = await live.service.wait_for(lambda s: s.path == path and "sec-purpose" not in s.headers)
        except TimeoutError:
            pytest.fail("the buyer's click never reached the service: the browser used what it had fetched")
        [click_id] = parse_qs(urlsplit(click.response_headers["location"]).query)["mc_click"]
        landing = await live.site.wait_for(lambda s: f"mc_click={click_id}" in s.query)
    assert [s.headers.get("sec-purpose") for s in live.service.to(path)] == ["prefetch;prerender", None]
    assert "sec-purpose" not in landing.headers  # the product page was not fetched speculatively either
    rows = await clicks_of(live, c["code"])
    assert [r["reason"] for r in rows] == ["ERR_PREFETCH", None]
    assert rows[1]["click_id"] == click_id
    answer = await post_order(live, click_id)
    assert (answer["status"], answer["reason"], answer["code"]) == ("attributed", None, c["code"])


ERROR_PAGES = [
    # Accept-Language as the browser sends it for its locale; the page's language and direction
    ("es-ES", "es", "ltr"),
    ("ar-EG", "ar", "rtl"),
    ("ja-JP", "ja", "ltr"),
]


@pytest.mark.parametrize(("locale", "lang", "direction"), ERROR_PAGES)
async def test_a_disabled_link_shows_a_page_in_the_buyers_language(
    live: Live, chromium: Browser, locale: str, lang: str, direction: str
) -> None:
    c = await new_code(live)
    r = await live.api.patch(f"/v1/codes/{c['code']}", json={"active": False})
    assert r.status_code == 200, r.text
    ctx = await chromium.new_context(user_agent=DESKTOP_CHROME, locale=locale)
    ctx.set_default_timeout(WAIT_S * 1000)
    try:
        page = await ctx.new_page()
        response = await page.goto(c["short_url"])
        assert response is not None and response.status == 410
        assert live.service.to(f"/e/{c['code']}")[-1].headers["accept-language"].startswith(locale)
        assert response.headers.get("content-language") == lang
        assert await page.get_attribute("html", "lang") == lang
        assert await page.get_attribute("html", "dir") == direction
        assert "ERR_410" in await page.inner_text("body")
        onward = page.locator(f"a[href='{FALLBACK_URL}']")
        await onward.wait_for(state="visible")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"error-410-{lang}.png"), full_page=True)
        await onward.click()
        await page.wait_for_url(FALLBACK_URL)
    finally:
        await ctx.close()
