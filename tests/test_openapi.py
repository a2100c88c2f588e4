"""Schemathesis fuzzes every /v1 operation of /openapi.json against the real service (issue #15 item 3).

The service runs as a uvicorn subprocess on the run's test database and a Redis prefix of its own:
schemathesis calls are synchronous, and the suite's one event loop must not wait on itself. Requests
carry the admin token; every POST /v1/events is signed over the exact bytes it sends. A seller, a
product, two codes and a click are seeded first (with a frozen seller and a delisted product for the
refusals), and hooks put their ids, a real cursor and valid values into some generated path
parameters, queries and bodies so that part of the cases get past validation. Two checks only: no
5xx, and every 4xx body is the SPEC's error envelope (schemathesis' conformance checks would flag
documented choices, such as ignoring unknown event fields).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from service import openapi
from service.auth import sign
from tests.conftest import (
    ADMIN,
    ADMIN_HEADERS,
    DATABASE_URL,
    OLD_SECRET,
    REDIS_URL,
    RUN,
    SECRET,
    SIGNING,
    UTM,
    drop_redis_keys,
)
from tests.server import start, stop
from tests.test_redirect import BUYER

ROOT = Path(__file__).resolve().parent.parent
PREFIX = f"t{RUN}oa:"
# Fuzzed cases per operation (besides schemathesis' fixed coverage cases); raise it for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "30"))
# What the seeding made; the hooks read it while schemathesis generates cases.
SEEDED: dict[str, str] = {}
OTHERS: dict[str, str] = {}  # a frozen seller and a delisted product, for the refusals
# The server's output, quoted when a check fails.
LOG: dict[str, Path] = {}


def _start(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn serving service.app:app on a free port, configured only by the MCODE_* set here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCODE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {
        "MCODE_ENV": "test",
        "MCODE_DATABASE_URL": DATABASE_URL,
        "MCODE_REDIS_URL": REDIS_URL,
        "MCODE_REDIS_PREFIX": PREFIX,
        "MCODE_PUBLIC_URL": "https://mc.example.net",
        "MCODE_ADMIN_TOKENS": ADMIN,
        "MCODE_SIGNING_KEYS": SIGNING,
        "MCODE_EVENT_SECRETS": f"{SECRET},{OLD_SECRET}",
        "MCODE_EMBEDDED_WRITER": "0",
        "MCODE_CACHE_TTL_S": "0",
        "MCODE_SPOOL_DIR": str(tmp / "spool"),
        "PYTHONPATH": str(ROOT),
    }
    log = LOG["path"] = tmp / "server.log"
    # cwd: a folder with no .env for the settings to read
    proc, port = start([sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", "{port}",
                        "--no-access-log"], env, log, tmp, ready_s=30)
    return proc, f"http://127.0.0.1:{port}"


def _seed(base: str) -> None:
    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        r = requests.request(method, base + path, headers=ADMIN_HEADERS, timeout=10, **kwargs)
        assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text}"
        return r

    seller, frozen, product, delisted = f"s-oa{RUN}", f"s-oa{RUN}-frozen", f"p-oa{RUN}", f"p-oa{RUN}-delisted"
    category = "toys"
    call("PUT", f"/v1/sellers/{seller}",
         json={"name": "Kid Shop", "status": "active", "verified": True, "affiliate_enabled": True})
    call("PUT", f"/v1/sellers/{frozen}",
         json={"name": "Cold Shop", "status": "frozen", "verified": True, "affiliate_enabled": True})
    for product_id, status in ((product, "listed"), (delisted, "delisted")):
        call("PUT", f"/v1/products/{product_id}", json={
            "seller_id": seller, "url": "https://www.aliexpress.com/item/100500.html", "category": category,
            "status": status, "stock": 10})
    call("PUT", f"/v1/commission-rates/{category}", json={"rate": "0.08"})
    code = call("POST", "/v1/codes", json={"seller_id": seller, "product_id": product, **UTM}).json()["code"]
    call("POST", "/v1/codes", json={"seller_id": seller, "product_id": product, **UTM, "utm_content": "reel2"})
    cursor = call("GET", f"/v1/codes?seller_id={seller}&limit=1").json()["next_cursor"]
    assert cursor, "two codes, one a page: there is a next page"
    r = requests.get(f"{base}/e/{code}", headers=BUYER, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    click = parse_qs(urlsplit(r.headers["location"]).query)["mc_click"][0]
    SEEDED.update(seller_id=seller, product_id=product, category=category, code=code, click_id=click, cursor=cursor)
    OTHERS.update(seller_id=frozen, product_id=delisted)


def _drop_keys() -> None:
    drop_redis_keys(PREFIX)


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, base = _start(tmp_path_factory.mktemp("openapi"))
    try:
        _seed(base)
        yield base
    finally:
        stop(proc)
        _drop_keys()


ID = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z")


def _seeded_path_parameters(ctx: schemathesis.HookContext, params: dict[str, Any]) -> Any:
    """Now and then a valid id: an existing seller, product, category or code (a new one for PUT,
    which must not turn the seeded records into something else)."""
    op = ctx.operation
    if not params or op is None:
        return st.just(params)
    if op.method.upper() == "PUT":
        return st.one_of(st.just(params), st.fixed_dictionaries({k: ID for k in params}).map(lambda p: params | p))
    known = {k: st.sampled_from([SEEDED[k], OTHERS[k]] if k in OTHERS else [SEEDED[k]]) for k in params if k in SEEDED}
    return st.one_of(st.just(params), st.fixed_dictionaries(known).map(lambda p: params | p)) if known \
        else st.just(params)


# Numbers as a client may spell them: bounds, signs, spaces, and digits that are not ASCII.
LIMITS = ["1", "500", "501", "0", "-1", "+5", " 5", "05", "1e2", "²", "٣", "१२"]


def _seeded_query(ctx: schemathesis.HookContext, query: dict[str, Any]) -> Any:
    """Now and then the seeded seller, a real cursor (its last characters maybe cut) or a tricky limit."""
    if not query:
        return st.just(query)
    known: dict[str, st.SearchStrategy[Any]] = {}
    if "seller_id" in query:
        known["seller_id"] = st.just(SEEDED["seller_id"])
    if "cursor" in query:
        known["cursor"] = st.integers(0, 3).map(lambda n: SEEDED["cursor"][: len(SEEDED["cursor"]) - n])
    if "limit" in query:
        known["limit"] = st.sampled_from(LIMITS)
    return st.one_of(st.just(query), st.fixed_dictionaries(known).map(lambda q: query | q)) if known \
        else st.just(query)


# Printable ASCII with no spaces: what a UTM value may be.
UTM_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)
CSV_HEADER = "seller_id,product_id,utm_source,utm_medium,utm_campaign,utm_content,utm_term\n"


def _now_iso(offset_s: int) -> str:
    """A time `offset_s` from now, computed when the case is drawn (attribution wants recent events)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))


def _valid_event() -> st.SearchStrategy[dict[str, Any]]:
    """An event the service accepts, on the seeded click or not; a few event and order ids recur,
    so that replays, conflicts (409) and payments or refunds of earlier orders happen too."""
    return st.fixed_dictionaries({
        "event_id": st.sampled_from(["e-oa-1", "e-oa-2"]) | st.uuids().map(lambda u: f"e-{u.hex}"),
        "type": st.sampled_from(["cart", "order", "payment", "refund"]),
        "occurred_at": st.integers(-2400, 400).map(_now_iso),
        "click_id": st.sampled_from([SEEDED["click_id"]]) | st.text(min_size=1, max_size=40),
        "order_id": st.sampled_from(["o-oa-1", "o-oa-2"]) | st.uuids().map(lambda u: f"o-{u.hex}"),
        "amount": st.from_regex(r"\A[0-9]{1,6}(\.[0-9]{1,3})?\Z"),
        "currency": st.sampled_from(["USD", "EUR", "JPY", "KWD", "XAU", "usd"]),
        "category": st.sampled_from([SEEDED["category"], "books"]),
    })


def _valid_product() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "seller_id": st.sampled_from([SEEDED["seller_id"], OTHERS["seller_id"]]),
        "url": st.sampled_from(["https://www.aliexpress.com/item/1.html", "https://aliexpress.com/i?x=1#y",
                                "https://ALIEXPRESS.com:443/a", "http://www.aliexpress.com/item/1.html"]),
        "category": st.sampled_from([SEEDED["category"], "books"]),
        "status": st.sampled_from(["listed", "delisted"]),
        "stock": st.integers(0, 20),
    })


def _seeded_body(ctx: schemathesis.HookContext, body: Any) -> Any:
    """Now and then a body that names the seeded records and holds valid values, laid over the
    generated one (whose other fields stay): a code for the seeded product, a product of the
    seeded seller, an event (maybe on the seeded click), a CSV upload with one good row."""
    op = ctx.operation
    if op is None:
        return st.just(body)
    route = (op.method.upper(), op.path)
    ids = {"seller_id": SEEDED["seller_id"], "product_id": SEEDED["product_id"]}
    if route == ("POST", "/v1/codes/bulk") and isinstance(body, str):
        row = st.tuples(UTM_TEXT, UTM_TEXT, UTM_TEXT, UTM_TEXT).map(
            lambda u: f"{ids['seller_id']},{ids['product_id']},{','.join(u)},\n")
        return st.one_of(st.just(body), row.map(lambda r: CSV_HEADER + r + body))
    if not isinstance(body, dict):
        return st.just(body)
    if route == ("POST", "/v1/codes"):
        utm = st.fixed_dictionaries({k: UTM_TEXT for k in UTM})
        others = st.sampled_from([{"seller_id": OTHERS["seller_id"]}, {"product_id": OTHERS["product_id"]}])
        return st.one_of(st.just(body), st.just(body | ids), utm.map(lambda u: body | ids | u),
                         st.tuples(utm, others).map(lambda x: body | ids | x[0] | x[1]))
    if route == ("POST", "/v1/events"):
        return st.one_of(st.just(body), _valid_event().map(lambda e: body | e))
    if route == ("PUT", "/v1/products/{product_id}"):
        return st.one_of(st.just(body), _valid_product().map(lambda p: body | p))
    if route == ("PUT", "/v1/commission-rates/{category}"):
        rate = (st.decimals(min_value=-1, max_value=2, places=6).map(str)
                | st.sampled_from(["0", "1", "0.08", "1.0000001", "1e-2", "-0", " 0.1", "0.123456789"]))
        return st.one_of(st.just(body), rate.map(lambda r: body | {"rate": r}))
    return st.just(body)


class SigningSession(requests.Session):
    """Signs every POST /v1/events over the exact bytes about to be sent (any generated
    Mcode-Signature is replaced: tests/test_events.py covers the refusals)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if request.method == "POST" and urlsplit(request.url or "").path == "/v1/events":
            body = request.body or b""
            raw = body.encode() if isinstance(body, str) else body
            assert isinstance(raw, bytes), type(body)
            stamp = str(int(time.time()))
            request.headers["Mcode-Signature"] = f"t={stamp},v1={sign(SECRET, stamp, raw)}"
        return super().send(request, **kwargs)


def _server_log() -> str:
    path = LOG.get("path")
    return path.read_text(errors="replace")[-4000:] if path and path.exists() else "(no server log)"


def no_server_error(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """not_a_server_error, with the server's traceback attached."""
    if response.status_code >= 500:
        raise AssertionError(
            f"SERVER ERROR {response.status_code} on {case.method} {case.formatted_path}: "
            f"{response.content[:500]!r}\n--- server log (tail) ---\n{_server_log()}"
        )


def error_envelope(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx body is {"error": {"code": "ERR_<status>", "message": "...", "fields"?: {...}}}."""
    status = response.status_code
    if not 400 <= status < 500:
        return
    where = f"{case.method} {case.formatted_path} answered {status} with {response.content[:500]!r}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"ENVELOPE: not JSON: {where}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, f"ENVELOPE: not {{'error': ...}}: {where}"
    err = body["error"]
    assert isinstance(err, dict), f"ENVELOPE: error is not an object: {where}"
    assert err.get("code") == f"ERR_{status}", f"ENVELOPE: code is not ERR_{status}: {where}"
    assert isinstance(err.get("message"), str) and err["message"], f"ENVELOPE: no message: {where}"
    assert set(err) <= {"code", "message", "fields"}, f"ENVELOPE: unexpected keys: {where}"
    if "fields" in err:
        fields = err["fields"]
        assert isinstance(fields, dict) and fields, f"ENVELOPE: fields is not a non-empty object: {where}"
        assert all(isinstance(v, str) for v in fields.values()), f"ENVELOPE: a field's reason is not text: {where}"


# The document the service serves at /openapi.json (test_served_document holds them equal), loaded
# eagerly: schemathesis 4.32's lazy loader (schemathesis.pytest.from_fixture) sets Function._nodeid,
# which pytest 9.2 no longer has, and fails before the first case.
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(openapi.document())))
schema.hook("flatmap_path_parameters")(_seeded_path_parameters)
schema.hook("flatmap_body")(_seeded_body)
schema.hook("flatmap_query")(_seeded_query)


def test_served_document(service_url: str) -> None:
    r = requests.get(f"{service_url}/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.json() == json.loads(json.dumps(openapi.document()))
    assert {op.ok().label for op in schema.get_all_operations()} == {
        f"{m.upper()} {p}" for m, p, *_ in openapi.ENDPOINTS}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation(case: schemathesis.Case, service_url: str) -> None:
    with SigningSession() as session:
        response = case.call(base_url=service_url, session=session, headers=dict(ADMIN_HEADERS), timeout=15)
    case.validate_response(response, checks=[not_a_server_error, no_server_error, error_envelope])



@pytest.mark.parametrize("path", ["/v1/codes", "/v1/reports/invalid-clicks"])
def test_limit_in_other_digits(service_url: str, path: str) -> None:
    """Found by test_every_operation: "²".isdigit() is True but int("²") raises ValueError, so
    service/api.py limit_param answered 500 where a bad `limit` gets 422."""
    case = schema[path]["GET"].Case(query={"limit": "²"})
    response = case.call(base_url=service_url, headers=dict(ADMIN_HEADERS), timeout=15)
    assert response.status_code == 422, (
        f"SERVICE BUG: GET {path}?limit=%C2%B2 answered {response.status_code} {response.content!r}, "
        "not 422 naming `limit` (service/api.py limit_param: '²'.isdigit() is True, int('²') raises)"
        f"\n--- server log (tail) ---\n{_server_log()[-1500:]}"
    )
    case.validate_response(response, checks=[not_a_server_error, no_server_error, error_envelope])
    assert "limit" in response.json()["error"].get("fields", {}), response.text
