import base64
import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from service import openapi
from service.api import MAX_DEPTH, parse_json
from service.auth import sign
from service.errors import ApiError
from tests.conftest import ADMIN_HEADERS, SECRET, Maker

# Any code point, lone surrogates and NUL included: whatever a client can put on the wire.
TEXT = st.text(st.characters(codec=None, categories=None), max_size=24)
FIELDS = sorted({"name", "status", "verified", "affiliate_enabled", "seller_id", "url", "category", "stock",
                 "rate", "product_id", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term",
                 "active", "event_id", "type", "occurred_at", "click_id", "order_id", "amount", "currency"})
SCALAR = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**30), max_value=10**30)
          | st.floats(allow_nan=False, allow_infinity=False) | TEXT | st.sampled_from(["active", "order", "USD", "1"]))
JSON = st.recursive(SCALAR, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                    max_leaves=12)
DEEP = st.integers(min_value=MAX_DEPTH, max_value=3000).map(lambda n: "[" * n + "]" * n)
BODY = (st.dictionaries(st.sampled_from(FIELDS) | TEXT, JSON, max_size=8).map(json.dumps)
        | DEEP | JSON.map(json.dumps) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
QUERY_NAMES = ("seller_id", "utm_campaign", "channel", "limit", "cursor", "from", "to", "group_by", "tz", "format",
               "reason")
ENDPOINTS = [(method.upper(), path) for method, path, *_ in openapi.ENDPOINTS]
CSV_HEADER = "seller_id,product_id,utm_source,utm_medium,utm_campaign,utm_content,utm_term\n"
TABLES = ("sellers", "seller_keys", "products", "commission_rates", "codes", "events", "orders", "carts")


def wire(text: str) -> str:
    """Percent-encoded as a client would send it, lone surrogates as their raw UTF-8 bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


async def written(app: Starlette) -> tuple[int, ...]:
    sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
    async with app.state.ctx.pool.acquire() as conn:
        return tuple(await conn.fetchrow(sql))


def test_depth_limit() -> None:
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "x") is not None
    for depth in (MAX_DEPTH + 1, 5000, 100_000):
        with pytest.raises(ApiError) as refused:
            parse_json("[" * depth + "]" * depth, "x")
        assert refused.value.code == "ERR_400"
    with pytest.raises(ApiError) as refused:
        parse_json('{"a": {"b": ' + "[" * 40 + "]" * 40 + "}}", "x")
    assert refused.value.code == "ERR_400"


@pytest.mark.parametrize(("document", "field"), [
    ('{"name": "a\\u0000b"}', "name"),
    ('{"name": "\\ud800"}', "name"),
    ('{"a": [1, {"b": "x\\u0000"}]}', "a.1.b"),
    ('"\\u0000"', "body"),
    ('{"\\u0000": 1}', "body"),
])
def test_unstorable_text_is_named(document: str, field: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json(document, "x")
    assert (refused.value.code, list(refused.value.fields or {})) == ("ERR_422", [field])


def test_paired_surrogates_and_other_controls_are_storable() -> None:
    assert parse_json('{"name": "\\ud83d\\ude00 \\u0001\\t"}', "x") == {"name": "\U0001f600 \x01\t"}


async def test_nul_in_path_and_query_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/commission-rates/to%00ys", json={"rate": "0.1"}, headers=ADMIN_HEADERS)
    assert (r.status_code, r.json()["error"]["fields"]) == (422, {"category": "must not contain NUL (\\u0000) "
                                                                              "or unpaired surrogates"})
    for path in ("/v1/codes", "/v1/reports/traffic", "/v1/reports/invalid-clicks"):
        r = await client.get(f"{path}?seller_id=a%00b&channel=ig", headers=ADMIN_HEADERS)
        assert (r.status_code, list(r.json()["error"]["fields"])) == (422, ["seller_id"]), path


async def test_cursor_nested_deep_is_refused(client: httpx.AsyncClient) -> None:
    cursor = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode()
    r = await client.get("/v1/codes", params={"cursor": cursor}, headers=ADMIN_HEADERS)
    assert (r.status_code, list(r.json()["error"]["fields"])) == (422, ["cursor"])
    cursor = base64.urlsafe_b64encode(b'["2024-01-01T00:00:00Z", "a\\u0000"]').decode()
    r = await client.get("/v1/reports/invalid-clicks", params={"cursor": cursor}, headers=ADMIN_HEADERS)
    assert r.status_code == 422


async def test_nul_in_a_bulk_csv_field_fails_that_row_only(client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    ok = f"{c['seller_id']},{c['product_id']},ig,social,ig_202405_kd_summer_sale,bulk1,\n"
    bad = f"{c['seller_id']},{c['product_id']},ig,social,ig_202405_kd_summer_sale,bulk2,t\x00erm\n"
    r = await client.post("/v1/codes/bulk", content=CSV_HEADER + ok + bad, headers=ADMIN_HEADERS)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["created"], answer["failed"]) == (1, 1)
    assert list(answer["rows"][1]["error"]["fields"]) == ["utm_term"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@given(path_text=TEXT, query=st.dictionaries(st.sampled_from(QUERY_NAMES), TEXT),
       body=BODY, csv_cells=st.lists(TEXT, max_size=8))
async def test_any_input_gets_an_answer_from_the_table_never_a_5xx(
    app: Starlette, client: httpx.AsyncClient, endpoint: tuple[str, str], path_text: str, query: dict[str, str],
    body: str, csv_cells: list[str],
) -> None:
    method, template = endpoint
    path = template
    for name in ("seller_id", "product_id", "category", "code"):
        path = path.replace(f"{{{name}}}", wire(path_text) or "x")
    url = path + ("?" + "&".join(f"{k}={wire(v)}" for k, v in query.items()) if query else "")
    headers = dict(ADMIN_HEADERS)
    content: bytes | None = None
    if method in ("PUT", "POST", "PATCH"):
        content = body.encode("utf-8", "surrogatepass")
        if template == "/v1/codes/bulk":
            content = (CSV_HEADER + ",".join(c.replace(",", "") for c in csv_cells)).encode("utf-8", "surrogatepass")
            headers["content-type"] = "text/csv"
        if template == "/v1/events":
            stamp = str(int(time.time()))
            headers["mcode-signature"] = f"t={stamp},v1={sign(SECRET, stamp, content)}"
    before = await written(app)
    r = await client.request(method, url, content=content, headers=headers)
    assert r.status_code < 500, (method, url, content, r.text)
    if r.status_code >= 400:
        error: dict[str, Any] = r.json()["error"]
        assert error["code"] == f"ERR_{r.status_code}" and error["message"]
        assert await written(app) == before, (method, url, content)
