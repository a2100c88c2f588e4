import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette

from service.app import create_app
from service.auth import sign
from service.clicks import click_time, new_click_id, now_ms
from service.events import round_money
from service.store import redis as keys
from tests.conftest import (
    ADMIN_HEADERS,
    OLD_SECRET,
    SECRET,
    Maker,
    app_behind_redis_proxy,
    drain,
    make_settings,
    one_redis_node,
    uid,
)
from tests.test_redirect import BUYER, IPHONE, click_id_of


def signed(body: bytes, secret: str = SECRET, t: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if t is None else t)
    mac = sign(secret, stamp, body)
    return {"mcode-signature": f"t={stamp},v1={mac}", "content-type": "application/json"}


async def post(client: httpx.AsyncClient, event: dict[str, Any], **sign: Any) -> httpx.Response:
    body = json.dumps(event).encode()
    return await client.post("/v1/events", content=body, headers=signed(body, **sign))


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def now() -> str:
    return iso(datetime.now(UTC))


async def a_click(client: httpx.AsyncClient, code: Maker, **code_fields: Any) -> tuple[dict[str, Any], str]:
    c = await code(**code_fields)
    r = await client.get(f"/e/{c['code']}", headers=BUYER)
    return c, click_id_of(r)


def order(click_id: str, amount: str = "19.99", currency: str = "USD", category: str | None = None,
          at: str | None = None, **extra: Any) -> dict[str, Any]:
    """An order event; its category is a fresh one (so the default rate, 0.05) unless given."""
    return {"event_id": uid("e"), "type": "order", "occurred_at": at or now(), "order_id": uid("o"),
            "click_id": click_id, "amount": amount, "currency": currency, "category": category or uid("cat")} | extra


async def test_signature_edge_cases(client: httpx.AsyncClient, code: Maker) -> None:
    _, click_id = await a_click(client, code)
    event = order(click_id)
    body = json.dumps(event).encode()
    t = int(time.time())
    refusals = [
        {},
        {"mcode-signature": "garbage"},
        {"mcode-signature": f"t={t}"},
        signed(body, secret="not-our-secret-0123456789"),
        signed(body, t=t - 310),
        signed(body, t=t + 310),
        signed(body + b" ", t=t),  # the body changed after signing
        {"mcode-signature": signed(body, t=t)["mcode-signature"].replace(f"t={t}", f"t={t + 1}")},
    ]
    for headers in refusals:
        r = await client.post("/v1/events", content=body, headers=headers)
        assert (r.status_code, r.json().get("error", {}).get("code")) == (401, "ERR_401"), (headers, r.text)
    # nothing was recorded by the refusals: the first accepted post is a 201
    # (a stamp near the edge, taken now: the refusals above may have taken a second or more)
    r = await client.post("/v1/events", content=body, headers=signed(body, secret=OLD_SECRET, t=int(time.time()) - 295))
    assert r.status_code == 201, r.text


async def test_order_right_after_the_click_is_attributed(client: httpx.AsyncClient, code: Maker) -> None:
    cat = uid("cat")
    await client.put(f"/v1/commission-rates/{cat}", json={"rate": "0.08"}, headers=ADMIN_HEADERS)
    c, click_id = await a_click(client, code)
    r = await post(client, order(click_id, category=cat))
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["status"] == "attributed" and answer["reason"] is None
    assert answer["click_id"] == click_id and answer["code"] == c["code"]
    assert answer["commission"] == {"amount": "1.60", "currency": "USD", "rate": "0.08", "status": "pending"}


async def test_default_rate_and_minor_units(client: httpx.AsyncClient, code: Maker) -> None:
    _, click_id = await a_click(client, code)
    r = await post(client, order(click_id, amount="1001", currency="JPY", category=uid("none")))
    assert r.json()["commission"] == {"amount": "50", "currency": "JPY", "rate": "0.05", "status": "pending"}
    _, click_id = await a_click(client, code)
    r = await post(client, order(click_id, amount="10.005", currency="KWD", category=uid("none")))
    assert r.json()["commission"]["amount"] == "0.500"  # 0.50025 half-even to 3 places


async def test_event_validation(client: httpx.AsyncClient) -> None:
    base = order("0" * 28)
    cases = {
        "amount": ["0", "-1", "abc", 19.99, "1e3", "19.999"],
        "currency": ["usd", "XXX", "XAU", 840],
        "occurred_at": ["2024-05-01 12:00:00", "yesterday", iso(datetime.now(UTC) + timedelta(seconds=400))],
        "type": ["purchase"],
        "event_id": ["", 5, "x" * 200],
        "click_id": [None],
    }
    for field, values in cases.items():
        for value in values:
            r = await post(client, base | {"event_id": uid("e"), field: value} if field != "event_id"
                           else base | {field: value})
            assert r.status_code == 422, (field, value, r.text)
            assert field in r.json()["error"]["fields"], (field, value)
    r = await post(client, order("0" * 28, amount="100.5", currency="JPY"))
    assert r.json()["error"]["fields"]["amount"].startswith("at most 0 decimal")
    r = await post(client, base | {"occurred_at": iso(datetime.now(UTC) + timedelta(seconds=250))})
    assert r.status_code == 201  # up to 300 s ahead is clock skew, not an error
    body = b"{oops"
    r = await client.post("/v1/events", content=body, headers=signed(body))
    assert r.status_code == 400


async def test_idempotency(client: httpx.AsyncClient, code: Maker) -> None:
    _, click_id = await a_click(client, code)
    event = order(click_id)
    first = await post(client, event)
    assert first.status_code == 201
    again = await post(client, dict(reversed(list(event.items()))))  # same JSON, other key order
    assert again.status_code == 200
    assert again.json() == first.json()
    other = await post(client, event | {"amount": "20.00"})
    assert (other.status_code, other.json()["error"]["code"]) == (409, "ERR_409")
    same_order = await post(client, event | {"event_id": uid("e")})
    assert same_order.status_code == 409


async def test_payment_and_refunds(client: httpx.AsyncClient, code: Maker) -> None:
    _, click_id = await a_click(client, code)
    o = order(click_id, amount="100.00")
    assert (await post(client, o)).json()["commission"]["amount"] == "5.00"
    for kind in ("payment", "refund"):
        r = await post(client, {"event_id": uid("e"), "type": kind, "occurred_at": now(), "order_id": uid("none")})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "ERR_404")
    r = await post(client, {"event_id": uid("e"), "type": "payment", "occurred_at": now(), "order_id": o["order_id"]})
    assert r.status_code == 201
    assert r.json()["status"] == "recorded"
    assert r.json()["commission"] == {"amount": "5.00", "currency": "USD", "rate": "0.05", "status": "payable"}
    assert r.json()["click_id"] == click_id
    refund = {"type": "refund", "occurred_at": now(), "order_id": o["order_id"]}
    r = await post(client, refund | {"event_id": uid("e"), "amount": "30.00"})
    assert r.json()["commission"] == {"amount": "3.50", "currency": "USD", "rate": "0.05", "status": "payable"}
    r = await post(client, refund | {"event_id": uid("e"), "amount": "70.01"})
    assert r.status_code == 422
    r = await post(client, refund | {"event_id": uid("e"), "amount": "1", "currency": "EUR"})
    assert r.status_code == 422
    r = await post(client, refund | {"event_id": uid("e")})  # the rest
    assert r.json()["commission"] == {"amount": "0.00", "currency": "USD", "rate": "0.05", "status": "reversed"}
    r = await post(client, refund | {"event_id": uid("e")})
    assert r.status_code == 422


async def test_not_attributed_reasons(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    r = await post(client, order("0123456789abcdef0123456789ab"))
    assert (r.json()["status"], r.json()["reason"]) == ("not_attributed", "ERR_NO_CLICK")
    assert "commission" not in r.json()
    r = await post(client, order("not-a-click-id"))
    assert r.json()["reason"] == "ERR_NO_CLICK"
    c = await code()
    bot = click_id_of(await client.get(f"/e/{c['code']}", headers={"user-agent": "curl/8"}))
    r = await post(client, order(bot))
    assert (r.json()["status"], r.json()["reason"]) == ("not_attributed", "ERR_INVALID_CLICK")
    _, valid = await a_click(client, code)
    early = iso(click_time(valid) - timedelta(seconds=61))  # beyond MCODE_CLOCK_SKEW_S (60)
    assert (await post(client, order(valid, at=early))).json()["reason"] == "ERR_WINDOW"


async def test_window_edges_exactly(code: Maker) -> None:
    app = create_app(make_settings(attribution_window_s=60, clock_skew_s=5))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            results = {}
            for offset_ms in (0, 60_000, 60_001, -5_000, -5_001):
                c = await code()
                click_id = click_id_of(await client.get(f"/e/{c['code']}", headers=BUYER))
                at = iso(click_time(click_id) + timedelta(milliseconds=offset_ms))
                results[offset_ms] = (await post(client, order(click_id, at=at))).json()["reason"]
    assert results == {0: None, 60_000: None, 60_001: "ERR_WINDOW", -5_000: None, -5_001: "ERR_WINDOW"}


async def test_whole_second_stamps_and_a_clock_behind_ours_are_attributed(
    client: httpx.AsyncClient, code: Maker
) -> None:
    _, click_id = await a_click(client, code)
    clicked = click_time(click_id)
    same_second = iso(clicked.replace(microsecond=0))  # most order systems stamp whole seconds
    r = await post(client, order(click_id, at=same_second))
    assert (r.json()["status"], r.json()["reason"]) == ("attributed", None)
    _, click_id = await a_click(client, code)
    behind = iso(click_time(click_id) - timedelta(seconds=59))
    assert (await post(client, order(click_id, at=behind))).json()["status"] == "attributed"
    _, click_id = await a_click(client, code)
    cart = {"event_id": uid("e"), "type": "cart", "occurred_at": iso(click_time(click_id) - timedelta(seconds=30)),
            "click_id": click_id}
    assert ((await post(client, cart)).json()["status"], (await post(client, cart)).json()["reason"]) == (
        "recorded", None)  # counted in the funnel: no reason against it


async def test_order_on_a_repeat_click_goes_to_the_first(app: Starlette, client: httpx.AsyncClient,
                                                        code: Maker) -> None:
    c = await code()
    first = click_id_of(await client.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": IPHONE}))
    await client.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": IPHONE})
    await drain(app)
    async with app.state.ctx.pool.acquire() as conn:
        repeat = await conn.fetchval("SELECT click_id FROM clicks WHERE code = $1 AND reason = 'ERR_DUP'", c["code"])
    r = await post(client, order(repeat))
    assert (r.json()["status"], r.json()["click_id"]) == ("attributed", first)


async def test_late_delivery_is_judged_from_postgres(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    _, click_id = await a_click(client, code)
    await drain(app)
    ctx = app.state.ctx
    await ctx.redis.delete(ctx.click_log.shards.attribution_key(click_id))  # as if it expired
    at = iso(click_time(click_id) + timedelta(seconds=120))
    assert (await post(client, order(click_id, at=at))).json()["status"] == "attributed"


async def test_many_events_judged_from_postgres_at_once_do_not_exhaust_the_pool(
        app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    # More concurrent events than the pool has connections (10), each needing its click from
    # Postgres: an event must not hold one connection while it waits for a second.
    clicks = [(await a_click(client, code))[1] for _ in range(3)]
    await drain(app)
    ctx = app.state.ctx
    for click_id in clicks:
        await ctx.redis.delete(ctx.click_log.shards.attribution_key(click_id))  # as if expired
    orders = [order(clicks[i % 3], at=iso(click_time(clicks[i % 3]) + timedelta(seconds=60))) for i in range(25)]
    answers = await asyncio.wait_for(asyncio.gather(*(post(client, o) for o in orders)), 60)
    assert [a.json()["status"] for a in answers] == ["attributed"] * 25


@one_redis_node
async def test_a_record_an_older_release_kept_without_shards_is_still_found(app: Starlette, client: httpx.AsyncClient,
                                                                         code: Maker) -> None:
    # A click answered by a worker of the previous release during a rolling deploy: its record is
    # in the untagged per-second hash, and the click is not in Postgres yet.
    c = await code()
    at = now_ms()
    click_id = new_click_id(at)
    ctx = app.state.ctx
    await ctx.redis.hset(f"{ctx.settings.redis_prefix}cs:{at // 1000}", click_id,
                         keys.attribution_value(at, "", "", c["code"], c["seller_id"]))
    r = await post(client, order(click_id))
    assert (r.json()["status"], r.json()["code"]) == ("attributed", c["code"])


async def test_carts(client: httpx.AsyncClient, code: Maker) -> None:
    _, click_id = await a_click(client, code)
    r = await post(client, {"event_id": uid("e"), "type": "cart", "occurred_at": now(), "click_id": click_id})
    assert r.status_code == 201
    assert (r.json()["status"], r.json()["reason"]) == ("recorded", None)
    r = await post(client, {"event_id": uid("e"), "type": "cart", "occurred_at": now(), "click_id": "0" * 28})
    assert r.json()["reason"] == "ERR_NO_CLICK"


async def test_concurrent_duplicates_count_once(app: Starlette, client: httpx.AsyncClient, code: Maker) -> None:
    _, click_id = await a_click(client, code)
    event = order(click_id)
    answers = await asyncio.gather(*(post(client, event) for _ in range(12)))
    assert sorted(r.status_code for r in answers) == [200] * 11 + [201]
    assert len({json.dumps(r.json(), sort_keys=True) for r in answers}) == 1
    rival_events = [order(click_id, order_id="shared-" + event["event_id"]) for _ in range(6)]
    answers = await asyncio.gather(*(post(client, e) for e in rival_events))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 5
    async with app.state.ctx.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE order_id = $1", event["order_id"]) == 1


async def test_event_metrics(client: httpx.AsyncClient, code: Maker) -> None:
    def value(text: str, prefix: str) -> float:
        return float(next(x for x in text.splitlines() if x.startswith(prefix)).rsplit(" ", 1)[1])

    before = (await client.get("/metrics")).text
    _, click_id = await a_click(client, code)
    await post(client, order(click_id))
    await post(client, order(click_id, amount="-1"))
    after = (await client.get("/metrics")).text
    for prefix, delta in (('mcode_events_total{status="attributed",type="order"}', 1),
                          ('mcode_events_total{status="rejected",type="order"}', 1),
                          ('mcode_attributions_total{result="attributed"}', 1)):
        assert value(after, prefix) == value(before, prefix) + delta, prefix


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2),
       st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=5))
def test_commission_rounding_half_even(amount: Decimal, rate: Decimal) -> None:
    value = round_money(amount * rate, "USD")
    assert value.as_tuple().exponent == -2
    assert abs(value - amount * rate) <= Decimal("0.005")
    assert Decimal(0) <= value <= amount
    exact = amount * rate * 100
    if exact - int(exact) == Decimal("0.5"):
        assert int(value * 100) % 2 == 0  # a tie goes to the even cent


async def test_hostile_values_are_refused_not_crashed(client: httpx.AsyncClient) -> None:
    body = json.dumps(order("f" * 28)).encode()
    r = await client.post("/v1/events", content=body, headers={"mcode-signature": "t=" + "9" * 400 + ",v1=00"})
    assert r.status_code == 401
    r = await post(client, order("ffffffffffff0000000000000000"))  # a click id from the year 10889
    assert (r.status_code, r.json()["reason"]) == (201, "ERR_NO_CLICK")
    r = await post(client, order("0" * 28, at="0001-01-01T00:00:00+05:00"))
    assert r.status_code == 422 and "occurred_at" in r.json()["error"]["fields"]


async def test_redis_down_orders_fall_back_to_postgres_or_ask_for_a_retry(
    app: Starlette, client: httpx.AsyncClient, code: Maker
) -> None:
    _, stored = await a_click(client, code)
    await drain(app)
    _, unstored = await a_click(client, code)  # answered, still in the stream
    async with app_behind_redis_proxy() as (cut_off, proxy):
        transport = httpx.ASGITransport(app=cut_off)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await proxy.cut()
            assert (await post(c, order(stored))).json()["status"] == "attributed"
            r = await post(c, order(unstored))
            assert r.status_code == 503  # not a wrong ERR_NO_CLICK: the order system retries
    assert (await post(client, order(unstored))).json()["status"] == "attributed"


async def test_postgres_down_answers_503_retry_after_and_logs_a_line_not_tracebacks(
    client: httpx.AsyncClient, code: Maker, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import DATABASE_URL
    from tests.faults import Proxy

    _, click_id = await a_click(client, code)
    proxy = await Proxy(5432).start()
    app = create_app(make_settings(database_url=DATABASE_URL.replace(":5432/", f":{proxy.port}/")))
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app, client=("198.51.100.21", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as via_proxy:
                await proxy.cut()
                events = [order(click_id) for _ in range(5)]
                with caplog.at_level("WARNING", logger="mcode"):
                    answers = [await post(via_proxy, e) for e in events]
                for r in answers:
                    assert r.status_code == 503, r.text
                    assert r.headers["retry-after"] == "5" and r.json()["error"]["code"] == "ERR_503"
                lines = [rec for rec in caplog.records if rec.name == "mcode"]
                assert len(lines) == 1 and "postgres unavailable" in lines[0].getMessage()
                assert not any(rec.exc_info for rec in caplog.records)
                await proxy.restore()
                # the order system retries: each event judged as if it had arrived the first time
                for event in events:
                    r = await post(via_proxy, event)
                    assert (r.status_code, r.json()["status"]) == (201, "attributed")
                assert (await post(via_proxy, events[0])).status_code == 200  # and a replay is a replay
    finally:
        await proxy.close()


async def test_an_order_on_a_click_still_in_flight_is_retried_not_judged(
    app: Starlette, client: httpx.AsyncClient, code: Maker
) -> None:
    """Redis forgot the click (a restart lost its last second) before a writer stored it: the
    order is told to retry, and once the click lands it is attributed, never ERR_NO_CLICK."""
    c, click_id = await a_click(client, code)
    ctx = app.state.ctx
    await ctx.click_log.drain()
    await ctx.redis.delete(ctx.click_log.shards.attribution_key(click_id))
    event = order(click_id)
    r = await post(client, event)
    assert (r.status_code, r.json()["error"]["code"], r.headers["retry-after"]) == (503, "ERR_503", "5")
    await drain(app)
    r = await post(client, event)
    assert (r.status_code, r.json()["status"], r.json()["code"]) == (201, "attributed", c["code"])
    # an id no click of ours has carried for longer than a click takes to land is final at once
    stale = new_click_id(now_ms() - 6 * 60_000)
    assert (await post(client, order(stale))).json()["reason"] == "ERR_NO_CLICK"
    future = new_click_id(now_ms() + 60_000)
    assert (await post(client, order(future))).json()["reason"] == "ERR_NO_CLICK"


async def test_an_order_on_a_repeat_of_a_displaced_first_goes_to_the_first_of_all(
    app: Starlette, client: httpx.AsyncClient, code: Maker
) -> None:
    # E arrived late and became the first; F, once the first, is now its repeat; Redis still says
    # X repeats F (X is not in Postgres yet). The order on X counts for E.
    from service.clicks import Click
    from service.devices import device_hash
    from service.store import clicks as click_sql

    c = await code()
    ctx = app.state.ctx
    at = now_ms() - 5_000
    device = device_hash(uid("d"))
    early = Click(new_click_id(at), at, c["code"], c["seller_id"], c["product_id"], "", device, "", "", "")
    was_first = Click(new_click_id(at + 1000), at + 1000, c["code"], c["seller_id"], c["product_id"], "ERR_DUP",
                      device, "", "", "", early.click_id)
    async with ctx.pool.acquire() as conn:
        await click_sql.write_batch(conn, [early.record(), was_first.record()])
    x = new_click_id(at + 2000)
    await ctx.redis.hset(ctx.click_log.shards.attribution_key(x), x,
                         keys.attribution_value(at + 2000, "ERR_DUP", was_first.click_id, c["code"], c["seller_id"]))
    r = await post(client, order(x))
    assert (r.json()["status"], r.json()["click_id"]) == ("attributed", early.click_id)


async def test_unstorable_text_in_a_field_we_do_not_read_does_not_lose_the_order(
    client: httpx.AsyncClient, code: Maker
) -> None:
    _, click_id = await a_click(client, code)
    body = json.dumps(order(click_id, note="half an emoji \ud83d and a \x00")).encode()
    r = await client.post("/v1/events", content=body, headers=signed(body))
    assert (r.status_code, r.json()["status"]) == (201, "attributed")
    body = json.dumps(order(click_id, order_id="o-\x00")).encode()
    r = await client.post("/v1/events", content=body, headers=signed(body))
    assert (r.status_code, list(r.json()["error"]["fields"])) == (422, ["order_id"])
