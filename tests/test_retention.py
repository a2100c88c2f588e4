"""Retention: day partitions of clicks dropped past MCODE_CLICK_RETENTION_DAYS while reports over
those days stay exact in every time zone (quarter-hour rollups), orders keep their own data.

Runs on a database of its own: dropping partitions must not touch the clicks other tests wrote."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.clicks import ROW_COLUMNS, Click, new_click_id
from service.store import clicks as sql
from service.store import reports as report_sql
from service.writer import STORED_COLUMNS, with_audience
from tests.conftest import ADMIN_HEADERS, PG_ROOT, RUN, UTM, make_settings, uid
from tests.test_events import iso, order, post

URL = f"{PG_ROOT}/mcode_test_{RUN}_retention"
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns")
IPS = ("1.1.1.0", "77.88.8.0", "203.0.113.0")
AGENTS = ("Mozilla/5.0", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36")
REFERERS = ("", "https://www.instagram.com/", "https://t.co/x")
REASONS = ("", "", "", "", "ERR_BOT", "ERR_DUP", "ERR_PREFETCH", "ERR_404", "ERR_400", "ERR_403", "ERR_410")
# America/St_Johns moves from -3:30 to -2:30 on 2025-03-09: its midnight moves from 03:30 to 02:30 UTC.
TODAY = date(2025, 3, 12)
FIRST_DAY = date(2025, 2, 28)  # clicks from here to TODAY; 2025-02-28 has no partition (default)


class Own:
    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.pool: asyncpg.Pool = app.state.ctx.pool

    async def code(self, seller_id: str | None = None, **utm: str) -> dict[str, Any]:
        if seller_id is None:
            seller_id = uid("s")
            r = await self.client.put(f"/v1/sellers/{seller_id}", headers=ADMIN_HEADERS, json={
                "name": "Kid Shop", "status": "active", "verified": True, "affiliate_enabled": True})
            assert r.status_code in (200, 201), r.text
        product_id = uid("p")
        r = await self.client.put(f"/v1/products/{product_id}", headers=ADMIN_HEADERS, json={
            "seller_id": seller_id, "url": "https://www.aliexpress.com/item/100500.html", "category": "toys",
            "status": "listed", "stock": 10})
        assert r.status_code in (200, 201), r.text
        r = await self.client.post("/v1/codes", headers=ADMIN_HEADERS,
                                   json={"seller_id": seller_id, "product_id": product_id, **UTM, **utm})
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def report(self, seller_id: str, tz: str, group_by: str = "day,code",
                     first: date = FIRST_DAY - timedelta(days=1),
                     last: date = TODAY + timedelta(days=1)) -> list[dict[str, Any]]:
        r = await self.client.get("/v1/reports/traffic", headers=ADMIN_HEADERS, params={
            "seller_id": seller_id, "group_by": group_by, "tz": tz, "from": first.isoformat(),
            "to": last.isoformat()})
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["rows"]
        return rows

    async def partitions(self) -> set[str]:
        async with self.pool.acquire() as conn:
            return {r["relname"] for r in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'clicks'::regclass")}


@pytest.fixture(scope="module")
async def own() -> AsyncIterator[Own]:
    admin = await asyncpg.connect(f"{PG_ROOT}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "mcode_test_{RUN}_retention" WITH (FORCE)')
    await admin.close()
    app = create_app(make_settings(database_url=URL))
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Own(app, client)
    finally:
        admin = await asyncpg.connect(f"{PG_ROOT}/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "mcode_test_{RUN}_retention" WITH (FORCE)')
        await admin.close()


def at_ms(day: date, hour: int, minute: int, second: int = 0, ms: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hour, minute, second, ms * 1000, tzinfo=UTC).timestamp() * 1000)


def clicks_around_midnights(codes: list[dict[str, Any]], rng: random.Random) -> list[Click]:
    """Clicks on every day from FIRST_DAY to TODAY, thick around the UTC quarter hours where the
    four zones' days begin (18:15, 18:30, 02:30, 03:30, 00:00) and on either side of each."""
    edges = [(18, 15), (18, 30), (2, 30), (3, 30), (0, 0), (18, 0), (3, 0), (2, 45)]
    clicks = []
    day = FIRST_DAY
    while day <= TODAY:
        moments = []
        for hour, minute in edges:
            exact = at_ms(day, hour, minute)
            moments += [exact, exact - 1, exact + 1, exact - 60_000, exact + 899_999, exact + 900_000]
        moments += [at_ms(day, rng.randrange(24), rng.randrange(60), rng.randrange(60)) for _ in range(20)]
        for ms in moments:
            c = rng.choice(codes)
            reason = rng.choice(REASONS)
            clicks.append(Click(new_click_id(ms), ms, c["code"], c["seller_id"], c["product_id"], reason,
                                f"dev{rng.randrange(10**9)}", rng.choice(IPS), rng.choice(AGENTS),
                                rng.choice(REFERERS), None, rng.choice(("link", "qr"))))
        day += timedelta(days=1)
    return clicks


def expected(clicks: list[Click], tz: str) -> dict[tuple[str, str], Counter[str]]:
    out: dict[tuple[str, str], Counter[str]] = {}
    zone = ZoneInfo(tz)
    for c in clicks:
        day = datetime.fromtimestamp(c.at_ms / 1000, zone).date().isoformat()
        counts = out.setdefault((day, c.code), Counter())
        counts["clicks"] += 1
        counts[c.reason or "valid_clicks"] += 1
    return out


def as_counts(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Counter[str]]:
    out = {}
    for row in rows:
        if not row["clicks"]:
            continue
        counts = Counter({"clicks": row["clicks"], "valid_clicks": row["valid_clicks"]})
        counts.update({r: n for r, n in row["invalid_clicks"].items() if n})
        out[row["day"], row["code"]] = +counts
    return out


async def test_reports_over_dropped_days_stay_exact_in_every_zone(own: Own) -> None:
    rng = random.Random(12)
    first = await own.code()
    codes = [first, await own.code(first["seller_id"], utm_campaign="ig_202503_b"),
             await own.code(first["seller_id"], utm_campaign="ig_202503_c")]
    sid = first["seller_id"]
    clicks = clicks_around_midnights(codes, rng)
    async with own.pool.acquire() as conn:
        await sql.ensure_partitions(conn, TODAY, days_back=(TODAY - FIRST_DAY).days - 1)
        assert sql.partition_name(FIRST_DAY) not in await own.partitions()
        # the writer's ways in: rows of the click log (COPY, rollups from the rows), those rows
        # delivered again (staging table), and records (staging table)
        lines = [with_audience(c.row().encode()) for c in clicks]
        third = len(lines) // 3
        assert await sql.write_rows(conn, lines[:third], STORED_COLUMNS) == third
        assert await sql.write_rows(conn, lines[: 2 * third], STORED_COLUMNS) == third
        assert await sql.write_batch(conn, [c.record() for c in clicks[2 * third:]]) == len(clicks) - 2 * third
        # verdicts changed after a late click: valid -> repeat and repeat -> valid
        changes = []
        for c in rng.sample([c for c in clicks if c.reason in ("", "ERR_DUP")], 40):
            was_valid = c.reason == ""
            changes.append((c.click_id, datetime.fromtimestamp(c.at_ms / 1000, UTC), c.code, was_valid,
                            clicks[0].click_id if was_valid else None))
            c.reason = "ERR_DUP" if was_valid else ""
        async with conn.transaction():
            await sql.change_verdicts(conn, changes)
        # the rollups are the clicks' counts, per quarter hour and per hour
        for bucket, table, column in (("date_bin('15 minutes', clicked_at, '2000-01-01')", "click_rollups_15m",
                                       "quarter"), ("date_trunc('hour', clicked_at, 'UTC')", "click_rollups", "hour")):
            differ = await conn.fetchval(f"""
                SELECT count(*) FROM (
                    (SELECT code, {bucket}, count(*), count(*) FILTER (WHERE reason IS NULL),
                            count(*) FILTER (WHERE reason = 'ERR_DUP') FROM clicks GROUP BY 1, 2
                     EXCEPT SELECT code, {column}, clicks, valid_clicks, "ERR_DUP" FROM {table})
                    UNION ALL
                    (SELECT code, {column}, clicks, valid_clicks, "ERR_DUP" FROM {table}
                     EXCEPT SELECT code, {bucket}, count(*), count(*) FILTER (WHERE reason IS NULL),
                            count(*) FILTER (WHERE reason = 'ERR_DUP') FROM clicks GROUP BY 1, 2)
                ) AS d""")
            assert differ == 0, table
        quarter, hour = "date_bin('15 minutes', clicked_at, '2000-01-01')", "date_trunc('hour', clicked_at, 'UTC')"
        for bucket, table, column in ((quarter, "seller_audience_15m", "quarter"), (hour, "seller_audience", "hour")):
            owner = "seller_id"
            counted = f"""
                SELECT {owner}, {bucket}, a.dimension, a.value, count(*), count(*) FILTER (WHERE reason IS NULL)
                FROM clicks CROSS JOIN LATERAL (
                    VALUES ('country', country), ('device', device), ('browser', browser), ('os', os),
                           ('referrer', referrer), ('via', via)) AS a(dimension, value)
                GROUP BY 1, 2, 3, 4"""
            kept = f"SELECT {owner}, {column}, dimension, value, clicks, valid_clicks FROM {table}"
            differ = await conn.fetchval(f"SELECT count(*) FROM (({counted} EXCEPT {kept}) UNION ALL "
                                         f"({kept} EXCEPT {counted})) AS d")
            assert differ == 0, table
        # and the days of 24 hours, one starting on every UTC hour
        counted = """
            SELECT date_trunc('day', clicked_at - make_interval(hours => a), 'UTC') + make_interval(hours => a), code,
                   count(*), count(*) FILTER (WHERE reason IS NULL), count(*) FILTER (WHERE reason = 'ERR_DUP')
            FROM clicks CROSS JOIN generate_series(0, 23) AS a GROUP BY 1, 2"""
        kept = 'SELECT day_start, code, clicks, valid_clicks, "ERR_DUP" FROM click_days'
        assert await conn.fetchval(f"SELECT count(*) FROM (({counted} EXCEPT {kept}) UNION ALL "
                                   f"({kept} EXCEPT {counted})) AS d") == 0

    before: dict[Any, list[dict[str, Any]]] = {}
    for tz in ZONES:
        rows = await own.report(sid, tz)
        assert as_counts(rows) == expected(clicks, tz), tz
        before[tz] = rows
        before[tz, "campaign"] = await own.report(sid, tz, "utm_campaign")
        for dimension in ("country", "via"):
            before[tz, dimension] = await own.report(sid, tz, f"day,{dimension}")  # the seller's own rollups
            assert len({r[dimension] for r in before[tz, dimension]}) > 1
            # with a code key (read from the clicks) the numbers add up to the same
            by_code = await own.report(sid, tz, f"day,code,{dimension}")
            summed: dict[tuple[str, str], Counter[str]] = {}
            for r in by_code:
                summed.setdefault((r["day"], r[dimension]), Counter()).update(
                    {"clicks": r["clicks"], "valid_clicks": r["valid_clicks"], **r["invalid_clicks"]})
            assert {(r["day"], r[dimension]): +Counter({"clicks": r["clicks"], "valid_clicks": r["valid_clicks"],
                                                        **r["invalid_clicks"]})
                    for r in before[tz, dimension]} == {k: +v for k, v in summed.items()}, (tz, dimension)
        # the rollups agree with the clicks themselves (the path kept for offsets no rollup fits)
        start = datetime.combine(FIRST_DAY - timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
        end = datetime.combine(TODAY + timedelta(days=2), datetime.min.time(), ZoneInfo(tz))
        async with own.pool.acquire() as conn:
            raw = await report_sql.click_counts(conn, ["day", "code"], sid, start, end, tz)
        assert {(r["day"].isoformat(), r["code"]): r["clicks"] for r in raw} == {
            (r["day"], r["code"]): r["clicks"] for r in rows if r["clicks"]}, tz

    # four days kept: today, yesterday and the two before
    async with own.pool.acquire() as conn:
        dropped = await sql.drop_expired_partitions(conn, 3, today=TODAY)
        kept_from = TODAY - timedelta(days=3)
        assert sorted(dropped) == [sql.partition_name(FIRST_DAY + timedelta(days=i))
                                   for i in range(1, (kept_from - FIRST_DAY).days)]
        assert await conn.fetchval("SELECT min(clicked_at) FROM clicks") >= datetime(
            kept_from.year, kept_from.month, kept_from.day, tzinfo=UTC)  # the default partition's old day too
        assert await sql.drop_expired_partitions(conn, 3, today=TODAY) == []
    for tz in ZONES:
        assert await own.report(sid, tz) == before[tz], tz
        assert await own.report(sid, tz, "utm_campaign") == before[tz, "campaign"], tz
        for dimension in ("country", "via"):
            assert await own.report(sid, tz, f"day,{dimension}") == before[tz, dimension], (tz, dimension)
    # the invalid-clicks ledger lists the clicks themselves: dropped days are gone from it
    days, cursor = set(), None
    while True:
        r = await own.client.get("/v1/reports/invalid-clicks", headers=ADMIN_HEADERS, params={
            "seller_id": sid, "from": FIRST_DAY.isoformat(), "to": TODAY.isoformat(), "limit": "100"}
            | ({"cursor": cursor} if cursor else {}))
        days |= {i["clicked_at"][:10] for i in r.json()["items"]}
        if not (cursor := r.json()["next_cursor"]):
            break
    assert days == {(kept_from + timedelta(days=i)).isoformat() for i in range(4)}
    # counting again from the clicks keeps the counts of the days that are gone: from a time on
    # (a writer of the old code kept only hourly rows since), and over all time
    kept_start = datetime(kept_from.year, kept_from.month, kept_from.day, tzinfo=UTC)
    async with own.pool.acquire() as conn:
        six = kept_start + timedelta(hours=6)
        deleted = await conn.execute("DELETE FROM click_rollups_15m WHERE quarter >= $1", six)
        assert deleted != "DELETE 0"
        await sql.recount_rollups(conn, since=six + timedelta(minutes=7))
    for tz in ZONES:
        assert await own.report(sid, tz) == before[tz], tz
    async with own.pool.acquire() as conn:
        await sql.recount_rollups(conn)
    for tz in ZONES:
        assert await own.report(sid, tz) == before[tz], tz
        assert await own.report(sid, tz, "day,via") == before[tz, "via"], tz


async def test_today_and_yesterday_are_never_dropped(own: Own) -> None:
    today = date(2031, 6, 10)
    recent = [sql.partition_name(today - timedelta(days=i)) for i in range(4)]  # today, yesterday, ...
    async with own.pool.acquire() as conn:
        await sql.ensure_partitions(conn, today, days_back=3)
        dropped = await sql.drop_expired_partitions(conn, 0, today=today)
        assert set(recent) & set(dropped) == set(recent[2:])
        for days in (1, -5):
            assert await sql.drop_expired_partitions(conn, days, today=today) == []
        assert set(recent[:2]) <= await own.partitions()
        # a table of that name that retention did not detach is not its to drop
        await conn.execute("CREATE TABLE clicks_20000101 (x int)")
        assert await sql.drop_expired_partitions(conn, 1, today=today) == []
        assert await conn.fetchval("SELECT to_regclass('clicks_20000101') IS NOT NULL")
        await conn.execute("DROP TABLE clicks_20000101")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await sql.drop_expired_partitions(conn, 1, today=today)


async def test_a_drop_waits_briefly_for_its_lock_and_writers_do_not_wait_behind_it(
    own: Own, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = date(2032, 1, 20)
    old = today - timedelta(days=10)
    monkeypatch.setattr(sql, "RETENTION_PAUSE_S", 0.05)
    c = await own.code()
    async with own.pool.acquire() as conn:
        await sql.ensure_partitions(conn, old, days_back=0)
        await sql.ensure_partitions(conn, today, days_back=1)
    holder = await asyncpg.connect(URL)
    try:
        # a long report (or any transaction that read clicks) holds the table
        tx = holder.transaction()
        await tx.start()
        await holder.fetchval("SELECT count(*) FROM clicks")
        async with own.pool.acquire() as conn, own.pool.acquire() as writer:
            started = time.perf_counter()
            drop = asyncio.create_task(sql.drop_expired_partitions(conn, 5, today=today))
            await asyncio.sleep(0.05)
            # meanwhile a writer's batch waits at most one lock timeout behind the drop's try
            ms = int(time.time() * 1000)
            click = Click(new_click_id(ms), ms, c["code"], c["seller_id"], c["product_id"], "", "d", "203.0.113.0",
                          "ua", "")
            t = time.perf_counter()
            assert await sql.write_rows(writer, [click.row().encode()], ROW_COLUMNS) == 1
            assert time.perf_counter() - t < sql.RETENTION_LOCK_TIMEOUT_MS / 1000 + 0.5
            assert await drop == []  # not granted: left for a later round
            limit = sql.RETENTION_TRIES * (sql.RETENTION_LOCK_TIMEOUT_MS / 1000 + sql.RETENTION_PAUSE_S) + 1
            assert time.perf_counter() - started < limit
        assert sql.partition_name(old) in await own.partitions()
        await tx.rollback()
        # a retention run that stopped between detaching and dropping: the next one drops it
        async with own.pool.acquire() as conn:
            name = sql.partition_name(old)
            await conn.execute(f"ALTER TABLE clicks DETACH PARTITION {name}")
            await conn.execute(f"COMMENT ON TABLE {name} IS '{sql._DETACHED_MARK}'")
            assert name in await sql.drop_expired_partitions(conn, 5, today=today)
            assert not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
    finally:
        await holder.close()


async def test_orders_outlive_their_clicks(own: Own) -> None:
    """An order keeps its click's code, seller and time: reports and later events need no click.
    An order posted for a click whose day was dropped finds no click (ERR_NO_CLICK)."""
    today = date(2024, 5, 20)  # orders are refused from the future: this one is in the past
    day = today - timedelta(days=30)
    c = await own.code()
    async with own.pool.acquire() as conn:
        await sql.ensure_partitions(conn, day, days_back=0)
        clicks = [Click(new_click_id(ms), ms, c["code"], c["seller_id"], c["product_id"], "", f"d{i}", "203.0.113.0",
                        "Mozilla/5.0", "") for i, ms in enumerate((at_ms(day, 18, 40), at_ms(day, 18, 50)))]
        await sql.write_rows(conn, [k.row().encode() for k in clicks], ROW_COLUMNS)
    sold = order(clicks[0].click_id, "40.00", at=iso(datetime.fromtimestamp(clicks[0].at_ms / 1000 + 60, UTC)))
    r = await post(own.client, sold)
    assert r.json()["status"] == "attributed", r.text
    before = await own.report(c["seller_id"], "Asia/Kolkata", "day", day, day + timedelta(days=1))
    assert [(row["day"], row["clicks"], row["orders"], row["gmv"]) for row in before] == [
        ((day + timedelta(days=1)).isoformat(), 2, 1, {"USD": "40.00"})]
    async with own.pool.acquire() as conn:
        assert sql.partition_name(day) in await sql.drop_expired_partitions(conn, 10, today=today)
    assert await own.report(c["seller_id"], "Asia/Kolkata", "day", day, day + timedelta(days=1)) == before
    r = await post(own.client, {"event_id": uid("e"), "type": "payment", "order_id": sold["order_id"],
                                "occurred_at": iso(datetime.now(UTC))})
    assert r.status_code == 201 and r.json()["commission"]["status"] == "payable", r.text
    late = order(clicks[1].click_id, "10.00", at=iso(datetime.fromtimestamp(clicks[1].at_ms / 1000 + 60, UTC)))
    r = await post(own.client, late)
    assert (r.status_code, r.json()["status"], r.json()["reason"]) == (201, "not_attributed", "ERR_NO_CLICK"), r.text
