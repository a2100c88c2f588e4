"""QR codes of short links: drawn by segno, read back by a real decoder (zbar), and the link they
carry redirects exactly as the plain short link."""

import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import segno
from starlette.applications import Starlette

from service import qr
from tests.conftest import ADMIN_HEADERS, Maker, drain, stored_click
from tests.test_catalog import bearer, issue_key
from tests.test_redirect import BUYER


def decoded(png: bytes, tmp_path: Path) -> str:
    if shutil.which("zbarimg") is None:
        pytest.skip("needs zbarimg to read the code back (Debian: apt-get install zbar-tools)")
    path = tmp_path / "code.png"
    path.write_bytes(png)
    done = subprocess.run(["zbarimg", "--quiet", "--raw", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_the_png_reads_back_as_the_short_link_with_qr_1(client: httpx.AsyncClient, code: Maker,
                                                             tmp_path: Path) -> None:
    c = await code()
    r = await client.get(f"/v1/codes/{c['code']}/qr", params={"format": "png", "scale": "8"}, headers=ADMIN_HEADERS)
    assert (r.status_code, r.headers["content-type"]) == (200, "image/png")
    assert decoded(r.content, tmp_path) == f"{c['short_url']}?qr=1"


async def test_svg_by_default_and_the_scale_sets_its_size(client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    small = await client.get(f"/v1/codes/{c['code']}/qr", headers=ADMIN_HEADERS)
    large = await client.get(f"/v1/codes/{c['code']}/qr?scale=40", headers=ADMIN_HEADERS)
    assert small.headers["content-type"].startswith("image/svg+xml")
    assert small.text.lstrip().startswith("<?xml") and "<svg" in small.text
    symbol = segno.make(f"{c['short_url']}?qr=1", error="m", boost_error=False)
    assert symbol.error == "M"
    # the symbol's modules plus a quiet zone of 4 on each side, times the scale
    modules = symbol.symbol_size(scale=1, border=4)[0]
    assert modules == symbol.symbol_size(scale=1, border=0)[0] + 8
    assert int(small.text.split('width="')[1].split('"')[0]) == modules * qr.DEFAULT_SCALE
    assert int(large.text.split('width="')[1].split('"')[0]) == modules * 40


@pytest.mark.parametrize(("query", "field"), [
    ("format=gif", "format"), ("scale=0", "scale"), ("scale=41", "scale"), ("scale=%C2%B2", "scale"),
    ("scale=", "scale"), ("scale=2.5", "scale"),
])
async def test_bad_format_or_scale_is_422_naming_it(client: httpx.AsyncClient, code: Maker, query: str,
                                                    field: str) -> None:
    c = await code()
    r = await client.get(f"/v1/codes/{c['code']}/qr?{query}", headers=ADMIN_HEADERS)
    assert (r.status_code, list(r.json()["error"]["fields"])) == (422, [field])


async def test_another_sellers_key_is_refused_and_an_unknown_code_is_404(client: httpx.AsyncClient,
                                                                         code: Maker) -> None:
    mine, theirs = await code(), await code()
    key = await issue_key(client, mine["seller_id"])
    assert (await client.get(f"/v1/codes/{mine['code']}/qr", headers=bearer(key))).status_code == 200
    assert (await client.get(f"/v1/codes/{theirs['code']}/qr", headers=bearer(key))).status_code == 403
    assert (await client.get(f"/v1/codes/{theirs['code']}/qr")).status_code == 401
    assert (await client.get("/v1/codes/NOSUCHCODE123/qr", headers=ADMIN_HEADERS)).status_code == 404


async def test_the_scanned_link_redirects_exactly_as_the_short_link(app: Starlette, client: httpx.AsyncClient,
                                                                    code: Maker) -> None:
    c = await code()
    plain = await client.get(f"/e/{c['code']}", headers=BUYER)
    scanned = await client.get(f"/e/{c['code']}?qr=1", headers=BUYER | {"user-agent": BUYER["user-agent"] + " x"})
    assert plain.status_code == scanned.status_code == 302

    def without_click(location: str) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(location)
        query = parse_qs(parts.query)
        query.pop("mc_click")
        return parts._replace(query="").geturl(), query

    assert without_click(scanned.headers["location"]) == without_click(plain.headers["location"])
    assert "qr" not in parse_qs(urlsplit(scanned.headers["location"]).query)
    # the writer records how each came
    other = await client.get(f"/e/{c['code']}?qr=0&x=1", headers=BUYER | {"user-agent": BUYER["user-agent"] + " y"})
    await drain(app)
    for response, via in ((plain, "link"), (scanned, "qr"), (other, "link")):
        click_id = parse_qs(urlsplit(response.headers["location"]).query)["mc_click"][0]
        assert (await stored_click(app, click_id) or {}).get("via") == via
