from typing import Any

import httpx

from tests.conftest import ADMIN_HEADERS, UTM, Maker, uid


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def issue_key(client: httpx.AsyncClient, seller_id: str) -> str:
    r = await client.post(f"/v1/sellers/{seller_id}/keys", headers=ADMIN_HEADERS)
    assert r.status_code == 201, r.text
    assert r.json()["seller_id"] == seller_id
    key: str = r.json()["key"]
    assert key.startswith("sk_")
    return key


async def test_seller_put_creates_then_replaces(client: httpx.AsyncClient) -> None:
    sid = uid("s")
    body = {"name": "A", "status": "active", "verified": True, "affiliate_enabled": False}
    r = await client.put(f"/v1/sellers/{sid}", json=body, headers=ADMIN_HEADERS)
    assert r.status_code == 201
    assert r.json()["affiliate_enabled"] is False
    r = await client.put(f"/v1/sellers/{sid}", json=body | {"status": "frozen"}, headers=ADMIN_HEADERS)
    assert r.status_code == 200
    assert r.json()["status"] == "frozen"


async def test_credentials(client: httpx.AsyncClient, seller: Maker) -> None:
    s = await seller()
    path = f"/v1/sellers/{s['seller_id']}"
    assert (await client.get(path)).json()["error"]["code"] == "ERR_401"
    assert (await client.get(path, headers=bearer("nope"))).status_code == 401
    assert (await client.get(path, headers=bearer("sk_unknown"))).status_code == 401
    key = await issue_key(client, s["seller_id"])
    assert (await client.get(path, headers=bearer(key))).status_code == 200
    # a seller key is not an admin token
    r = await client.put(path, json={"name": "x", "status": "active", "verified": True, "affiliate_enabled": True},
                         headers=bearer(key))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "ERR_403"


async def test_key_for_unknown_seller_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post(f"/v1/sellers/{uid('none')}/keys", headers=ADMIN_HEADERS)
    assert r.status_code == 404


async def test_seller_validation(client: httpx.AsyncClient) -> None:
    r = await client.put(f"/v1/sellers/{uid('s')}", headers=ADMIN_HEADERS,
                         json={"name": "", "status": "sleeping", "verified": "yes", "extra": 1})
    assert r.status_code == 422
    fields = r.json()["error"]["fields"]
    assert {"name", "status", "verified", "affiliate_enabled", "extra"} <= fields.keys()
    r = await client.put("/v1/sellers/bad%20id", headers=ADMIN_HEADERS,
                         json={"name": "a", "status": "active", "verified": True, "affiliate_enabled": True})
    assert r.status_code == 422
    assert "seller_id" in r.json()["error"]["fields"]


async def test_malformed_bodies_never_500(client: httpx.AsyncClient) -> None:
    path = f"/v1/sellers/{uid('s')}"
    cases: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"content": b"[1,2]", "headers": {"content-type": "application/json"}},
        {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
        {"content": b"name=x", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        {"content": b""},
    ]
    for case in cases:
        r = await client.put(path, headers=ADMIN_HEADERS | case.pop("headers", {}), **case)
        assert r.status_code == 400, (case, r.text)
        assert r.json()["error"]["code"] == "ERR_400"
    r = await client.put(path, headers=ADMIN_HEADERS, content=b'{"name":"' + b"x" * 70000 + b'"}')
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "ERR_413"
    r = await client.get(path, headers=ADMIN_HEADERS)
    assert r.status_code == 404  # nothing half-written


async def test_product_url_rules(client: httpx.AsyncClient, seller: Maker) -> None:
    s = await seller()
    base = {"seller_id": s["seller_id"], "category": "toys", "status": "listed", "stock": 3}
    for url in ("http://www.aliexpress.com/x", "https://evil.com/x", "https://a@www.aliexpress.com/",
                "https://www.aliexpress.com:8080/", "https://1.2.3.4/"):
        r = await client.put(f"/v1/products/{uid('p')}", json=base | {"url": url}, headers=ADMIN_HEADERS)
        assert r.status_code == 422, url
        assert "url" in r.json()["error"]["fields"]
    r = await client.put(f"/v1/products/{uid('p')}", headers=ADMIN_HEADERS,
                         json=base | {"url": "https://WWW.AliExpress.com/item/1.html"})
    assert r.status_code == 201
    assert r.json()["url"] == "https://www.aliexpress.com/item/1.html"
    r = await client.put(f"/v1/products/{uid('p')}", headers=ADMIN_HEADERS,
                         json=base | {"url": "https://www.aliexpress.com/", "stock": -1, "seller_id": "ghost"})
    assert set(r.json()["error"]["fields"]) == {"stock"}
    r = await client.put(f"/v1/products/{uid('p')}", headers=ADMIN_HEADERS,
                         json=base | {"url": "https://www.aliexpress.com/", "seller_id": "ghost"})
    assert r.json()["error"]["fields"] == {"seller_id": "no seller 'ghost'"}


async def test_commission_rates(client: httpx.AsyncClient) -> None:
    cat = uid("cat")
    r = await client.put(f"/v1/commission-rates/{cat}", json={"rate": "0.08"}, headers=ADMIN_HEADERS)
    assert r.status_code == 201
    assert r.json()["rate"] == "0.08"
    r = await client.put(f"/v1/commission-rates/{cat}", json={"rate": "0.1"}, headers=ADMIN_HEADERS)
    assert r.status_code == 200
    for bad in ("1.5", "-0.1", "abc", "NaN", 0.1):
        r = await client.put(f"/v1/commission-rates/{cat}", json={"rate": bad}, headers=ADMIN_HEADERS)
        assert r.status_code == 422, bad
    listing = (await client.get("/v1/commission-rates", headers=ADMIN_HEADERS)).json()
    assert {"category": cat, "rate": "0.1"}.items() <= next(i for i in listing["items"] if i["category"] == cat).items()
    assert listing["default_rate"] == "0.05"


async def test_code_create_is_idempotent(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    s = await seller()
    p = await product(s["seller_id"])
    body = {"seller_id": s["seller_id"], "product_id": p["product_id"], **UTM}
    first = await client.post("/v1/codes", json=body, headers=ADMIN_HEADERS)
    assert first.status_code == 201
    data = first.json()
    assert data["short_url"] == f"https://mc.example.net/e/{data['code']}"
    assert data["channel"] == "instagram"
    assert data["active"] is True
    assert data["warnings"] == []
    assert data["utm_term"] is None
    assert data["landing_url"] == (
        "https://www.aliexpress.com/item/100500.html?spm=a2g0o&utm_source=ig&utm_medium=social"
        "&utm_campaign=ig_202405_kd_summer_sale&utm_content=reel1#reviews"
    )
    again = await client.post("/v1/codes", json=body, headers=ADMIN_HEADERS)
    assert again.status_code == 200
    assert again.json()["code"] == data["code"]
    other = await client.post("/v1/codes", json=body | {"utm_term": "shoes"}, headers=ADMIN_HEADERS)
    assert other.status_code == 201
    assert other.json()["code"] != data["code"]


async def test_code_rules(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    s = await seller()
    p = await product(s["seller_id"])
    base = {"seller_id": s["seller_id"], "product_id": p["product_id"], **UTM}
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS,
                          json=base | {"utm_campaign": "c" * 51, "utm_source": "a b", "utm_content": None})
    assert r.status_code == 422
    assert set(r.json()["error"]["fields"]) == {"utm_campaign", "utm_source", "utm_content"}
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS, json=base | {"product_id": "ghost"})
    assert r.json()["error"]["fields"] == {"product_id": "no product 'ghost'"}
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS, json=base | {"seller_id": "ghost"})
    assert r.status_code == 422
    assert "seller_id" in r.json()["error"]["fields"]
    other = await seller()
    foreign = await product(other["seller_id"])
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS, json=base | {"product_id": foreign["product_id"]})
    assert r.status_code == 422
    assert "product_id" in r.json()["error"]["fields"]
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS, json=base | {"utm_campaign": "test"})
    assert r.status_code == 201
    assert len(r.json()["warnings"]) == 2


async def test_code_refused_for_seller_state_and_unsellable_product(
    client: httpx.AsyncClient, seller: Maker, product: Maker
) -> None:
    for state in ({"status": "frozen"}, {"status": "under_review"}, {"verified": False},
                  {"affiliate_enabled": False}):
        s = await seller()
        p = await product(s["seller_id"])
        await seller(seller_id=s["seller_id"], **state)
        r = await client.post("/v1/codes", headers=ADMIN_HEADERS,
                              json={"seller_id": s["seller_id"], "product_id": p["product_id"], **UTM})
        assert r.status_code == 403, state
    s = await seller()
    for state in ({"status": "delisted"}, {"stock": 0}):
        p = await product(s["seller_id"], **state)
        r = await client.post("/v1/codes", headers=ADMIN_HEADERS,
                              json={"seller_id": s["seller_id"], "product_id": p["product_id"], **UTM})
        assert r.status_code == 404, state
        assert r.json()["error"]["code"] == "ERR_404"


async def test_seller_key_scope(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    mine, theirs = await seller(), await seller()
    my_product, their_product = await product(mine["seller_id"]), await product(theirs["seller_id"])
    key = await issue_key(client, mine["seller_id"])
    r = await client.post("/v1/codes", headers=bearer(key),
                          json={"seller_id": mine["seller_id"], "product_id": my_product["product_id"], **UTM})
    assert r.status_code == 201
    my_code = r.json()["code"]
    r = await client.post("/v1/codes", headers=bearer(key),
                          json={"seller_id": theirs["seller_id"], "product_id": their_product["product_id"], **UTM})
    assert r.status_code == 403
    r = await client.post("/v1/codes", headers=ADMIN_HEADERS,
                          json={"seller_id": theirs["seller_id"], "product_id": their_product["product_id"], **UTM})
    their_code = r.json()["code"]
    assert (await client.get(f"/v1/codes/{my_code}", headers=bearer(key))).status_code == 200
    assert (await client.get(f"/v1/codes/{their_code}", headers=bearer(key))).status_code == 403
    r = await client.patch(f"/v1/codes/{their_code}", json={"active": False}, headers=bearer(key))
    assert r.status_code == 403
    assert (await client.get(f"/v1/codes?seller_id={theirs['seller_id']}", headers=bearer(key))).status_code == 403
    listing = (await client.get("/v1/codes", headers=bearer(key))).json()
    assert [i["code"] for i in listing["items"]] == [my_code]
    assert (await client.get(f"/v1/sellers/{theirs['seller_id']}", headers=bearer(key))).status_code == 403


async def test_get_and_patch_code(client: httpx.AsyncClient, code: Maker) -> None:
    c = await code()
    r = await client.get(f"/v1/codes/{c['code']}", headers=ADMIN_HEADERS)
    assert r.json() == c
    r = await client.patch(f"/v1/codes/{c['code']}", json={"active": False}, headers=ADMIN_HEADERS)
    assert r.status_code == 200
    assert r.json()["active"] is False
    r = await client.patch(f"/v1/codes/{c['code']}", json={"active": "no"}, headers=ADMIN_HEADERS)
    assert r.status_code == 422
    tampered = c["code"][:-1] + ("A" if c["code"][-1] != "A" else "B")
    assert (await client.get(f"/v1/codes/{tampered}", headers=ADMIN_HEADERS)).status_code == 404


async def test_list_pagination_newest_first(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    s = await seller()
    p = await product(s["seller_id"])
    made = []
    for i in range(7):
        r = await client.post("/v1/codes", headers=ADMIN_HEADERS,
                              json={"seller_id": s["seller_id"], "product_id": p["product_id"], **UTM,
                                    "utm_content": f"c{i}", "utm_campaign": "tt_202405_x" if i % 2 else "ig_202405_y"})
        made.append(r.json()["code"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"seller_id": s["seller_id"], "limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/codes", params=params, headers=ADMIN_HEADERS)).json()
        seen += [i["code"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    page = (await client.get("/v1/codes", params={"seller_id": s["seller_id"], "utm_campaign": "tt_202405_x"},
                             headers=ADMIN_HEADERS)).json()
    assert len(page["items"]) == 3
    assert page["next_cursor"] is None
    for bad in ({"limit": "501"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "%%%"}):
        r = await client.get("/v1/codes", params=bad, headers=ADMIN_HEADERS)
        assert r.status_code == 422, bad
