import csv
import io

import httpx

from tests.conftest import ADMIN_HEADERS, Maker
from tests.test_catalog import bearer, issue_key

HEADER = "seller_id,product_id,utm_source,utm_medium,utm_campaign,utm_content,utm_term"
CSV_HEADERS = ADMIN_HEADERS | {"content-type": "text/csv"}


async def test_bulk_rows_judged_one_by_one(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    s = await seller()
    p = await product(s["seller_id"])
    sid, pid = s["seller_id"], p["product_id"]
    body = "\ufeff" + "\r\n".join([
        HEADER,
        f"{sid},{pid},ig,social,ig_202405_a,reel1,",
        f"{sid},{pid},ig,social,ig_202405_a,reel1,",
        f"{sid},ghost,ig,social,ig_202405_a,reel1,",
        f"{sid},{pid},tt,social,{'c' * 60},reel1,kw",
        f"{sid},{pid},tt,video,tt_202405_b,clip,kw",
    ]) + "\r\n"
    r = await client.post("/v1/codes/bulk", content=body.encode(), headers=CSV_HEADERS)
    assert r.status_code == 200, r.text
    data = r.json()
    assert (data["created"], data["existing"], data["failed"]) == (2, 1, 2)
    rows = data["rows"]
    assert [row["row"] for row in rows] == [2, 3, 4, 5, 6]
    assert rows[0]["code"] == rows[1]["code"]
    assert rows[0]["short_url"].endswith("/e/" + rows[0]["code"])
    assert rows[2]["error"]["code"] == "ERR_422"
    assert "product_id" in rows[2]["error"]["fields"]
    assert "utm_campaign" in rows[3]["error"]["fields"]
    r = await client.get(f"/v1/codes/{rows[4]['code']}", headers=ADMIN_HEADERS)
    assert r.json()["utm_term"] == "kw"


async def test_bulk_csv_answer(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    s = await seller()
    p = await product(s["seller_id"])
    body = f"{HEADER}\n{s['seller_id']},{p['product_id']},fb,cpc,fb_202405_x,ad1,\n{s['seller_id']},nope,fb,cpc,x,y,\n"
    r = await client.post("/v1/codes/bulk", content=body.encode(), headers=CSV_HEADERS | {"accept": "text/csv"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0].keys()) == [*HEADER.split(","), "code", "short_url", "error"]
    assert rows[0]["code"] and rows[0]["error"] == ""
    assert rows[1]["code"] == "" and rows[1]["error"].startswith("ERR_422")


async def test_bulk_over_500_rows_creates_nothing(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    s = await seller()
    p = await product(s["seller_id"])
    lines = [HEADER] + [f"{s['seller_id']},{p['product_id']},ig,social,ig_202405_a,c{i}," for i in range(501)]
    r = await client.post("/v1/codes/bulk", content="\n".join(lines).encode(), headers=CSV_HEADERS)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "ERR_413"
    listing = (await client.get("/v1/codes", params={"seller_id": s["seller_id"]}, headers=ADMIN_HEADERS)).json()
    assert listing["items"] == []


async def test_bulk_bad_uploads(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/codes/bulk", content=b"seller_id,product_id\n", headers=CSV_HEADERS)
    assert r.status_code == 422
    assert "utm_source" in r.json()["error"]["fields"]
    r = await client.post("/v1/codes/bulk", content=b"\xff\xfe\x00", headers=CSV_HEADERS)
    assert r.status_code == 400
    r = await client.post("/v1/codes/bulk", content=b"", headers=CSV_HEADERS)
    assert r.status_code == 422
    r = await client.post("/v1/codes/bulk", content=b"{}", headers=ADMIN_HEADERS | {"content-type": "application/json"})
    assert r.status_code == 400


async def test_bulk_with_seller_key_only_its_own_rows(client: httpx.AsyncClient, seller: Maker, product: Maker) -> None:
    mine, theirs = await seller(), await seller()
    mp, tp = await product(mine["seller_id"]), await product(theirs["seller_id"])
    key = await issue_key(client, mine["seller_id"])
    body = (f"{HEADER}\n{mine['seller_id']},{mp['product_id']},ig,s,ig_202405_a,x,\n"
            f"{theirs['seller_id']},{tp['product_id']},ig,s,ig_202405_a,x,\n")
    r = await client.post("/v1/codes/bulk", content=body.encode(), headers=bearer(key) | {"content-type": "text/csv"})
    data = r.json()
    assert (data["created"], data["failed"]) == (1, 1)
    assert data["rows"][1]["error"]["code"] == "ERR_403"
