"""The click pipeline under faults caused for real: a killed writer, Postgres and Redis cut off."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from service import audience, metrics
from service.app import new_writer
from service.clicks import ROW_COLUMNS, Click, new_click_id, now_ms
from service.devices import device_hash
from service.spool import Spool
from service.store import clicks as sql
from service.store import postgres
from service.store import redis as keys
from service.writer import EVERY_CLICK, Writer, decode
from tests.conftest import (
    ADMIN,
    ADMIN_HEADERS,
    DATABASE_URL,
    REDIS_URL,
    SECRET,
    SIGNING,
    Maker,
    app_behind_redis_proxy,
    drain,
    make_settings,
    one_redis_node,
    stored_click,
)
from tests.faults import Proxy
from tests.test_metrics import free_port
from tests.test_redirect import BUYER, click_id_of


async def count(app: Starlette, code: str) -> tuple[int, int]:
    async with app.state.ctx.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT count(*), count(DISTINCT click_id) FROM clicks WHERE code = $1", code)
    return row[0], row[1]


async def backlog(app: Starlette) -> int:
    return await keys.backlog(app.state.ctx.redis, app.state.ctx.click_log.shards)


async def log_clicks(app: Starlette, code: str, n: int) -> list[str]:
    ctx = app.state.ctx
    clicks = []
    for i in range(n):
        at = now_ms()
        clicks.append(Click(new_click_id(at), at, code, None, None, "", device_hash(f"{code}{i}"), "203.0.113.0",
                            "ua", "", None))
    await asyncio.gather(*(ctx.click_log.log(c, dedup=False) for c in clicks))
    return [c.click_id for c in clicks]


def writer_process(app: Starlette, log: Path, *options: str) -> subprocess.Popen[bytes]:
    # a process of its own, as deployed: not sharing this test process's metric files
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
        "MCODE_ENV": "test", "MCODE_DATABASE_URL": DATABASE_URL, "MCODE_REDIS_URL": REDIS_URL,
        "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_SIGNING_KEYS": SIGNING, "MCODE_EVENT_SECRETS": SECRET,
        "MCODE_REDIS_PREFIX": app.state.ctx.settings.redis_prefix,
        "MCODE_SPOOL_DIR": app.state.ctx.settings.spool_dir,
    }
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "service.cli", "writer", "--batch", "2",
                                 "--claim-idle-ms", "300", *options], env=env, stdout=subprocess.DEVNULL, stderr=err)


async def wait_until(predicate, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_writer_killed_mid_batch_then_restarted_stores_every_click_once(app: Starlette, tmp_path: Path) -> None:
    await drain(app)
    code = "KILL" + uuid.uuid4().hex[:8]
    n = 30_000
    await log_clicks(app, code, n)
    log = tmp_path / "writer.log"
    first = writer_process(app, log)
    try:
        await wait_until(lambda: _some(app, code))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    written, _ = await count(app, code)
    assert 0 < written < n, "the writer should have died mid-way"
    second = writer_process(app, log)
    try:
        await wait_until(lambda: _all(app, code, n))
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, log.read_text()
    assert await count(app, code) == (n, n)
    assert await backlog(app) == 0


async def test_a_separate_writer_serves_its_own_metrics(app: Starlette, tmp_path: Path) -> None:
    await drain(app)
    code = "METRICS" + uuid.uuid4().hex[:8]
    await log_clicks(app, code, 500)
    port = free_port()
    log = tmp_path / "writer.log"
    proc = writer_process(app, log, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    try:
        await wait_until(lambda: _all(app, code, 500))
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert [s.value for s in families["mcode_clicks_written"].samples if s.name.endswith("_total")] == [500]
        errors = {s.labels["dependency"]: s.value for s in families["mcode_dependency_errors"].samples
                  if s.name.endswith("_total")}
        assert errors == {"redis": 0, "postgres": 0}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()


async def _some(app: Starlette, code: str) -> bool:
    return (await count(app, code))[0] > 0


async def _all(app: Starlette, code: str, n: int) -> bool:
    return (await count(app, code))[0] == n and await backlog(app) == 0


async def test_batches_written_twice_are_stored_once(app: Starlette) -> None:
    await drain(app)
    code = "TWICE" + uuid.uuid4().hex[:8]
    await log_clicks(app, code, 50)
    ctx = app.state.ctx
    a = new_writer(ctx)
    entries = []
    for stream in a.streams:  # one by one: on a cluster each lives in a slot of its own
        reply = await ctx.redis.xreadgroup(keys.WRITER_GROUP, "reader-a", {stream: ">"}, count=1000)
        entries += [(name, items) for name, items in reply]
    for _, items in entries:
        async with ctx.pool.acquire() as conn:  # a writer that committed, then died before acking
            await sql.write_rows(conn, decode(items), ROW_COLUMNS)
    # another writer takes the unacknowledged entries over and writes them again
    b = new_writer(ctx)
    b.claim_idle_ms = 0
    written_before = metrics.CLICKS_WRITTEN._value.get()
    await b.claim_abandoned()
    assert metrics.CLICKS_WRITTEN._value.get() == written_before  # stored already: not counted again
    await a.close()
    await b.close()
    assert await count(app, code) == (50, 50)
    assert await backlog(app) == 0
    async with ctx.pool.acquire() as conn:  # the hourly rollups counted each click once too
        assert await conn.fetchval("SELECT sum(clicks) FROM click_rollups WHERE code = $1", code) == 50


async def buyer_click(client: httpx.AsyncClient, code: str, device: int) -> str:
    headers = BUYER | {"user-agent": f"{BUYER['user-agent']} device/{device}"}
    return click_id_of(await client.get(f"/e/{code}", headers=headers))


async def test_postgres_unreachable_clicks_wait_in_the_stream(app: Starlette, client: httpx.AsyncClient,
                                                              code: Maker) -> None:
    await drain(app)
    c = await code()
    proxy = await Proxy(5432).start()
    pool = await postgres.create_pool(DATABASE_URL.replace(":5432/", f":{proxy.port}/"), max_size=2)
    ctx = app.state.ctx
    writer = Writer(pool, ctx.redis, ctx.click_log.shards, None, 3600, name="cut-off")
    task = asyncio.create_task(writer.run())
    try:
        ids = [await buyer_click(client, c["code"], i) for i in range(20)]
        await wait_until(lambda: _all(app, c["code"], 20))
        await proxy.cut()
        ids += [await buyer_click(client, c["code"], i) for i in range(20, 50)]
        await asyncio.sleep(1.5)
        assert await count(app, c["code"]) == (20, 20)
        assert await backlog(app) >= 30
        await proxy.restore()
        await wait_until(lambda: _all(app, c["code"], 50))
    finally:
        writer.stop()
        await task
        await pool.close()
        await proxy.close()
    async with ctx.pool.acquire() as conn:
        stored = {r[0] for r in await conn.fetch("SELECT click_id FROM clicks WHERE code = $1", c["code"])}
    assert stored == set(ids)


async def test_redis_unreachable_buyer_still_redirected_and_click_kept(code: Maker, tmp_path: Path) -> None:
    async with app_behind_redis_proxy(spool_dir=str(tmp_path)) as (app, proxy):
        c = await code()
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as buyer:
            await proxy.cut()
            first = await buyer.get(f"/e/{c['code']}", headers=BUYER)
            again = await buyer.get(f"/e/{c['code']}", headers=BUYER)
            bot = await buyer.get(f"/e/{c['code']}", headers={"user-agent": "curl/8"})
            assert (first.status_code, again.status_code, bot.status_code) == (302, 302, 302)
            assert list(tmp_path.glob("*/*.jsonl")), "the clicks wait in the local spool"
            metrics = (await buyer.get("/metrics")).text
            assert 'mcode_dependency_errors_total{dependency="redis"} 0.0' not in metrics
            assert "mcode_click_backlog 3.0" in metrics  # the spooled clicks are answered, not stored
        # the writer replays the spool into Postgres, judging the repeat there
        writer = new_writer(app.state.ctx)
        assert await writer.replay_spool() == 3
        await writer.close()
    assert not list(tmp_path.glob("*/*.jsonl"))
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        rows = await conn.fetch("SELECT click_id, reason, original_click_id FROM clicks WHERE code = $1", c["code"])
    finally:
        await conn.close()
    by_id = {r["click_id"]: (r["reason"], r["original_click_id"]) for r in rows}
    first_id, again_id = click_id_of(first), click_id_of(again)
    assert by_id[first_id] == (None, None)
    assert by_id[again_id] == ("ERR_DUP", first_id)
    assert by_id[click_id_of(bot)] == ("ERR_BOT", None)



async def test_redis_that_stops_answering_buyer_still_redirected_and_click_stored_once(
        code: Maker, tmp_path: Path) -> None:
    from service.clicks import REDIS_RETRY_S, REDIS_TIMEOUT_S

    async with app_behind_redis_proxy(spool_dir=str(tmp_path)) as (app, _):
        c = await code()
        ctx = app.state.ctx
        admin = aioredis.Redis.from_url(REDIS_URL)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.41", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as buyer:
            await buyer.get("/healthz")
            # Redis takes the click log's script but does not run it for a while (a hung Redis,
            # for real): the call times out, its clicks go to the spool, and if the script runs
            # after all, the writer still stores each click once.
            await admin.client_pause(int((REDIS_TIMEOUT_S + 0.5) * 1000), all=False)
            hung = await buyer.get(f"/e/{c['code']}", headers=BUYER)
            skipped = await buyer.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": "Mozilla/5.0 (X11) Gecko"})
            assert (hung.status_code, skipped.status_code) == (302, 302)
            assert list(tmp_path.glob("*/*.jsonl")), "the clicks wait in the local spool"
            await asyncio.sleep(REDIS_RETRY_S + 0.6)  # the pause is over, Redis is tried again
            after = await buyer.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": "Mozilla/5.0 (X11) Firefox"})
            assert after.status_code == 302
        await admin.aclose()
        await drain(app)
        async with ctx.pool.acquire() as conn:
            rows = await conn.fetch("SELECT click_id, reason FROM clicks WHERE code = $1", c["code"])
    assert sorted(r["click_id"] for r in rows) == sorted(click_id_of(r) for r in (hung, skipped, after))
    assert [r["reason"] for r in rows] == [None, None, None]
    assert not list(tmp_path.glob("*/*.jsonl"))


async def test_a_spool_file_out_of_time_order_is_judged_click_by_click(app: Starlette) -> None:
    # Several pumps spool at once, so a later click can come first in the file; each click's
    # dedup flag must stay with it when the replay sorts them by time.
    ctx = app.state.ctx
    code, device = "SPOOL" + uuid.uuid4().hex[:8], device_hash(uuid.uuid4().hex)
    at = now_ms()
    first = Click(new_click_id(at - 5000), at - 5000, code, "s", "p", "", device, "203.0.113.0", "ua", "")
    async with ctx.pool.acquire() as conn:
        await sql.write_batch(conn, [first.record()])
    bot = Click(new_click_id(at - 1000), at - 1000, code, "s", "p", "ERR_BOT", device, "203.0.113.0", "bot", "")
    again = Click(new_click_id(at), at, code, "s", "p", "", device, "203.0.113.0", "ua", "")
    ctx.spool.append([(again.payload(), True), (bot.payload(), False)])
    writer = new_writer(ctx)
    try:
        assert await writer.replay_spool() == 2
    finally:
        await writer.close()
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT click_id, reason, original_click_id FROM clicks WHERE code = $1", code)
    assert {r["click_id"]: (r["reason"], r["original_click_id"]) for r in rows} == {
        first.click_id: (None, None), bot.click_id: ("ERR_BOT", None), again.click_id: ("ERR_DUP", first.click_id),
    }


async def test_streams_lost_by_redis_are_made_again_and_drained(app: Starlette) -> None:
    await drain(app)  # nothing in flight is lost with the streams, so the backlog stays right
    ctx = app.state.ctx
    writer = new_writer(ctx)
    try:
        await writer.step()  # the writer is up, its groups made
        await ctx.redis.delete(*writer.streams)  # as a Redis restarted without persistence has them
        code = "LOST" + uuid.uuid4().hex[:8]
        await log_clicks(app, code, 20)  # the log script makes a stream again, without the group
        for _ in range(5):
            await writer.step()
            if (await count(app, code))[0] == 20:
                break
    finally:
        await writer.close()
    assert await count(app, code) == (20, 20)


async def test_entries_that_can_never_be_stored_are_set_aside_not_retried(app: Starlette) -> None:
    await drain(app)
    ctx = app.state.ctx
    prefix = ctx.settings.redis_prefix
    code = "POISON" + uuid.uuid4().hex[:6]
    good = await log_clicks(app, code, 5)
    stream = ctx.click_log.shards.streams[0]
    at = now_ms()
    refused = Click(new_click_id(at), at, code, None, None, "ERR_NOPE", "d", "1.2.3.0", "ua", "")
    ok = Click(new_click_id(at), at, code, None, None, "", "d2", "1.2.3.0", "ua", "")
    good.append(ok.click_id)
    # as the log script would write them: the entry count goes with the entry
    garbled = Click(new_click_id(at), at, code, None, None, "", "d3", "1.2.3.0", "ua", "").row().encode()
    garbled = garbled.replace(code.encode(), b"\xff" + code.encode())  # not UTF-8: Postgres refuses it
    block = f"not a row\n{refused.row()}\n{ok.row()}\n".encode() + garbled
    await ctx.redis.xadd(stream, {"n": 4, "c": block})
    await ctx.redis.incrby(ctx.click_log.shards.backlog(0), 4)
    await drain(app)
    async with ctx.pool.acquire() as conn:
        stored = {r[0] for r in await conn.fetch("SELECT click_id FROM clicks WHERE code = $1", code)}
    assert stored == set(good)
    rejected = await ctx.redis.xrange(keys.rejects_key(prefix))
    rows = [fields[b"c"] for _, fields in rejected]
    assert b"not a row" in rows and refused.row().encode() in rows and garbled in rows


async def test_after_a_redis_outage_spooled_clicks_go_back_to_redis_from_the_process_itself(
        code: Maker, tmp_path: Path) -> None:
    from service.clicks import REDIS_RETRY_S

    async with app_behind_redis_proxy(spool_dir=str(tmp_path)) as (app, proxy):
        c = await code()
        ctx = app.state.ctx
        transport = httpx.ASGITransport(app=app, client=("198.51.100.40", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as buyer:
            before = await keys.backlog(ctx.redis, ctx.click_log.shards)
            await proxy.cut()
            first = await buyer.get(f"/e/{c['code']}", headers=BUYER)
            assert first.status_code == 302
            assert list(tmp_path.glob("*/*.jsonl"))
            await proxy.restore()
            # no writer runs here: the clicking process itself puts the click back into Redis
            for _ in range(int(REDIS_RETRY_S * 10) + 50):
                if not list(tmp_path.glob("*/*.jsonl")):
                    break
                await asyncio.sleep(0.1)
            assert not list(tmp_path.glob("*/*.jsonl"))
            assert await keys.backlog(ctx.redis, ctx.click_log.shards) == before + 1
            # and Redis now knows it: the same device again is a repeat of the spooled click
            again = await buyer.get(f"/e/{c['code']}", headers=BUYER)
            assert click_id_of(again) == click_id_of(first)
        await drain(app)
        async with ctx.pool.acquire() as conn:
            rows = await conn.fetch("SELECT reason, original_click_id FROM clicks WHERE code = $1 ORDER BY clicked_at",
                                    c["code"])
    assert [tuple(r) for r in rows] == [(None, None), ("ERR_DUP", click_id_of(first))]


async def test_a_restarted_process_puts_the_spool_it_left_back_into_redis(code: Maker, tmp_path: Path) -> None:
    from service.app import create_app

    c = await code()
    settings = make_settings(spool_dir=str(tmp_path))
    spool = Spool(settings.spool_dir, namespace=f"{settings.database_url}|{settings.redis_prefix}")
    at = now_ms()
    click = Click(new_click_id(at), at, c["code"], c["seller_id"], c["product_id"], "", device_hash("left"),
                  "203.0.113.0", "Mozilla/5.0 (X11) Firefox/125", "")
    spool.append([(click.payload(), True)])
    (spool.dir / f"active-{spool.pid}.jsonl").rename(spool.dir / "active-999999999.jsonl")  # a process gone
    app = create_app(settings)
    async with LifespanManager(app):
        for _ in range(50):
            if not list(tmp_path.glob("*/*.jsonl")):
                break
            await asyncio.sleep(0.1)
        assert not list(tmp_path.glob("*/*.jsonl"))
        await drain(app)
        assert (await stored_click(app, click.click_id) or {}).get("reason", "missing") is None


def test_decode_marks_the_repeats_the_log_script_found() -> None:
    at = now_ms()
    first, again, bot = (Click(new_click_id(at), at, "C0DE", "s", "p", reason, device_hash("d"), "203.0.113.0",
                               "ua", "", None) for reason in ("", "", "ERR_BOT"))
    block = f"{first.row()}\n{bot.row()}\n{again.row()}".encode()
    rows = decode([(b"1-0", {b"n": b"3", b"c": block, b"d": f"3:{first.click_id}".encode()})])
    assert rows[:2] == [first.row().encode(), bot.row().encode()]
    again.reason, again.original_click_id = "ERR_DUP", first.click_id
    assert rows[2] == again.row().encode()
    # A garbled mark (only a corrupted entry has one) leaves the rows as written; nothing is lost.
    for mark in (b"9:x", b"x:y", b"2:", b"0:abc"):
        assert decode([(b"1-0", {b"n": b"3", b"c": block, b"d": mark})]) == block.split(b"\n")


async def test_rollups_of_a_batch_match_its_clicks_first_time_and_when_delivered_again(app: Starlette) -> None:
    code, unknown = "ROLL" + uuid.uuid4().hex[:8], "X?" + uuid.uuid4().hex[:6]
    hour_ago = now_ms() - 3_600_000
    clicks = [
        Click(new_click_id(at), at, c, seller, "p" if seller else None, reason, device_hash(f"{c}{i}"),
              "203.0.113.0", "Mozilla/5.0\t(tab)\\", "", None)
        for i, (at, c, seller, reason) in enumerate([
            (hour_ago, code, "s1", ""), (hour_ago + 1, code, "s1", "ERR_BOT"), (now_ms(), code, "s1", ""),
            (now_ms(), code, "s1", "ERR_DUP"), (now_ms(), unknown, None, "ERR_400"),
        ])
    ]
    rows = [c.row().encode() for c in clicks[:3]]
    everything = rows + [c.row().encode() for c in clicks[3:]]
    per_reason = ", ".join(f"count(*) FILTER (WHERE reason = '{r}') AS \"{r}\"" for r in sql.REASON_COLUMNS)
    recount = f"""
        SELECT code, date_trunc('hour', clicked_at, 'UTC') AS hour, min(seller_id) AS seller_id, count(*) AS clicks,
               count(*) FILTER (WHERE reason IS NULL) AS valid_clicks, {per_reason}
        FROM clicks WHERE code = ANY($1) GROUP BY 1, 2 ORDER BY 1, 2"""
    rollups = f"""
        SELECT code, hour, seller_id, clicks, valid_clicks, {", ".join(f'"{r}"' for r in sql.REASON_COLUMNS)}
        FROM click_rollups WHERE code = ANY($1) ORDER BY 1, 2"""
    async with app.state.ctx.pool.acquire() as conn:
        assert await sql.write_rows(conn, rows, ROW_COLUMNS) == 3  # all new: straight into the table
        # three already stored: only the two new ones go in, and only they are counted
        assert await sql.write_rows(conn, everything, ROW_COLUMNS) == 2
        assert await sql.write_rows(conn, everything, ROW_COLUMNS) == 0
        stored = await conn.fetch(recount, [code, unknown])
        assert [r["clicks"] for r in stored] == [2, 2, 1]
        assert [dict(r) for r in await conn.fetch(rollups, [code, unknown])] == [dict(r) for r in stored]
        user_agents = await conn.fetch("SELECT DISTINCT user_agent FROM clicks WHERE code = $1", code)
        assert [r["user_agent"] for r in user_agents] == ["Mozilla/5.0\t(tab)\\"]


def test_rollup_counts_read_back_escaped_and_null_fields() -> None:
    at = now_ms()
    click = Click(new_click_id(at), at, "a\\b", None, None, "ERR_400", device_hash("d"), "", "ua", "", None)
    (code, hour, seller, reason, n), audience = sql.rollup_counts([click.row().encode()] * 2, ROW_COLUMNS) or ([], [])
    assert (code, seller, reason, n) == (["a\\b"], [None], ["ERR_400"], [2])
    assert audience is None  # rows without the dimensions judged add no audience counts
    assert hour == [click.record()[1].strftime("%Y-%m-%dT%H")]
    # what Click.row() does not write is left to Postgres to read (the staging path): another
    # time format, bytes that are not UTF-8, escapes it never uses, a lone backslash
    row = click.row().encode()
    for odd in (row.replace(row.split(b"\t")[1], b"2026-11-27 10:00:00+03"), row.replace(b"a\\\\b", b"\xff"),
                row.replace(b"a\\\\b", b"Q\\x41"), row.replace(b"a\\\\b", b"ab\\")):
        assert odd != row
        assert sql.rollup_counts([odd], ROW_COLUMNS) is None


async def test_a_click_logged_twice_is_not_a_repeat_of_itself(app: Starlette) -> None:
    # A script call that timed out but ran, and the same click again from the spool: the dedup
    # mark holds the click's own id, which makes it the first click, not a repeat.
    ctx = app.state.ctx
    at = now_ms()
    code, device = "TWICE" + uuid.uuid4().hex[:8], device_hash(uuid.uuid4().hex)
    click = Click(new_click_id(at), at, code, "s", "p", "", device, "203.0.113.0", "Mozilla/5.0 (X11)", "")
    assert await ctx.click_log.log(click, dedup=True) == ""
    assert await ctx.click_log.log(click, dedup=True) == ""
    later = Click(new_click_id(at + 1), at + 1, code, "s", "p", "", device, "203.0.113.0", "Mozilla/5.0 (X11)", "")
    assert await ctx.click_log.log(later, dedup=True) == click.click_id
    await drain(app)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT click_id, reason FROM clicks WHERE code = $1 ORDER BY clicked_at", code)
    assert [tuple(r) for r in rows] == [(click.click_id, None), (later.click_id, "ERR_DUP")]


ROLLUPS_MATCH = """
    SELECT count(*) FROM (
        SELECT code, date_trunc('hour', clicked_at, 'UTC') AS hour, count(*) AS clicks,
               count(*) FILTER (WHERE reason IS NULL) AS valid, count(*) FILTER (WHERE reason = 'ERR_DUP') AS dup
        FROM clicks WHERE code = $1 GROUP BY 1, 2
        EXCEPT
        SELECT code, hour, clicks, valid_clicks, "ERR_DUP" FROM click_rollups WHERE code = $1
    ) AS differ
"""


async def test_a_repeat_redis_forgot_is_stored_as_a_repeat_and_its_order_goes_to_the_first(
    app: Starlette, client: httpx.AsyncClient, code: Maker
) -> None:
    from tests.test_events import order, post

    c = await code()
    ctx = app.state.ctx
    prefix = ctx.settings.redis_prefix
    # Redis has run for longer than a dedup window: its verdicts stand, nothing is in doubt
    shards = ctx.click_log.shards
    for shard in range(shards.count):
        await ctx.redis.set(shards.epoch(shard), str(now_ms() - 7_200_000))
        await ctx.redis.delete(shards.doubt(shard))
    first = click_id_of(await client.get(f"/e/{c['code']}", headers=BUYER))
    await drain(app)
    assert [await keys.doubt(ctx.redis, shards, s) for s in range(shards.count)] == [None] * shards.count
    # then it restarts without persistence: marks, records, streams and epoch are gone
    await ctx.redis.delete(*[k async for k in ctx.redis.scan_iter(match=f"{prefix}*")])
    again = click_id_of(await client.get(f"/e/{c['code']}", headers=BUYER))
    assert again != first  # Redis could not know
    assert not ctx.click_log.redis_down  # the log script took it, making a new epoch, not the spool
    assert any([await keys.doubt(ctx.redis, shards, s) for s in range(shards.count)])
    await drain(app)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT click_id, reason, original_click_id FROM clicks WHERE code = $1 "
                                "ORDER BY clicked_at", c["code"])
        assert await conn.fetchval(ROLLUPS_MATCH, c["code"]) == 0
    assert [tuple(r) for r in rows] == [(first, None, None), (again, "ERR_DUP", first)]
    r = await post(client, order(again))
    assert (r.json()["status"], r.json()["click_id"]) == ("attributed", first)
    report = (await client.get("/v1/reports/traffic", headers=ADMIN_HEADERS,
                               params={"seller_id": c["seller_id"]})).json()["rows"][0]
    assert (report["valid_clicks"], report["invalid_clicks"]["ERR_DUP"]) == (1, 1)


async def test_an_earlier_click_written_late_becomes_the_first(app: Starlette) -> None:
    ctx = app.state.ctx
    code, device = "LATE" + uuid.uuid4().hex[:8], device_hash(uuid.uuid4().hex)
    at = now_ms() - 600_000

    def click(offset_ms: int, reason: str = "", original: str | None = None) -> Click:
        moment = at + offset_ms
        return Click(new_click_id(moment), moment, code, "s", "p", reason, device, "203.0.113.0", "Mozilla/5.0", "",
                     original)

    early, later = click(0), click(60_000)
    follower = click(120_000, "ERR_DUP", later.click_id)  # Redis found it a repeat of `later`
    writer = new_writer(ctx)
    try:
        await writer.store([later.row().encode(), follower.row().encode()], EVERY_CLICK)
        await writer.store([early.row().encode()], EVERY_CLICK)  # from a spool, or a shard written after
        # delivered again: nothing changes
        await writer.store([early.row().encode(), later.row().encode()], EVERY_CLICK)
    finally:
        await writer.close()
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT click_id, reason, original_click_id FROM clicks WHERE code = $1 "
                                "ORDER BY clicked_at", code)
        assert await conn.fetchval(ROLLUPS_MATCH, code) == 0
    assert [tuple(r) for r in rows] == [
        (early.click_id, None, None), (later.click_id, "ERR_DUP", early.click_id),
        (follower.click_id, "ERR_DUP", early.click_id)]


async def test_concurrent_writers_judge_one_batch_at_a_time(app: Starlette) -> None:
    ctx = app.state.ctx
    code, device = "RACE" + uuid.uuid4().hex[:8], device_hash(uuid.uuid4().hex)
    at = now_ms()
    clicks = [Click(new_click_id(at + i), at + i, code, "s", "p", "", device, "203.0.113.0", "Mozilla/5.0", "")
              for i in range(6)]
    writers = [new_writer(ctx) for _ in clicks]
    try:
        await asyncio.gather(*(w.store([c.row().encode()], EVERY_CLICK) for w, c in zip(writers, clicks, strict=True)))
    finally:
        for w in writers:
            await w.close()
    async with ctx.pool.acquire() as conn:
        reasons = await conn.fetch("SELECT reason, original_click_id FROM clicks WHERE code = $1 ORDER BY clicked_at",
                                   code)
        assert await conn.fetchval(ROLLUPS_MATCH, code) == 0
    assert [r["reason"] for r in reasons] == [None] + ["ERR_DUP"] * 5
    assert {r["original_click_id"] for r in reasons[1:]} == {clicks[0].click_id}


async def test_clicks_redis_lost_in_a_restart_are_sent_again(code: Maker, tmp_path: Path) -> None:
    """Redis restarted without persistence before a writer stored the last clicks: the stream,
    the marks and the records are gone. The click log notices (the epoch is gone) and sends the
    clicks of its last seconds again; each is stored once."""
    from service.clicks import REDIS_RETRY_S

    async with app_behind_redis_proxy(spool_dir=str(tmp_path)) as (app, proxy):
        c = await code()
        ctx = app.state.ctx
        prefix = ctx.settings.redis_prefix
        transport = httpx.ASGITransport(app=app, client=("198.51.100.42", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as buyer:
            taken = [await buyer.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": f"Mozilla/5.0 (X11) n/{i}"})
                     for i in range(3)]
            await proxy.cut()  # Redis goes down ...
            admin = aioredis.Redis.from_url(REDIS_URL)
            lost = [k async for k in admin.scan_iter(match=f"{prefix}*")]
            await admin.delete(*lost)  # ... and comes back empty
            await admin.aclose()
            during = await buyer.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": "Mozilla/5.0 (X11) during"})
            await proxy.restore()
            await asyncio.sleep(REDIS_RETRY_S + 0.5)
        await drain(app)
        async with ctx.pool.acquire() as conn:
            rows = await conn.fetch("SELECT click_id, reason FROM clicks WHERE code = $1", c["code"])
    answered = sorted(click_id_of(r) for r in [*taken, during])
    assert sorted(r["click_id"] for r in rows) == answered
    assert [r["reason"] for r in rows] == [None] * 4


async def test_a_first_click_that_reaches_redis_after_its_repeat_stays_the_first(app: Starlette) -> None:
    # F was spooled while Redis was away; its repeat R came after Redis was back, before the
    # spool was replayed, and was answered as valid. When F arrives, it is the first: Redis
    # takes it as such, and the writer makes R its repeat.
    ctx = app.state.ctx
    code, device = "ORDER" + uuid.uuid4().hex[:8], device_hash(uuid.uuid4().hex)
    at = now_ms()
    first = Click(new_click_id(at), at, code, "s", "p", "", device, "203.0.113.0", "Mozilla/5.0 (X11)", "")
    repeat = Click(new_click_id(at + 900), at + 900, code, "s", "p", "", device, "203.0.113.0", "Mozilla/5.0", "")
    assert await ctx.click_log.log(repeat, dedup=True) == ""
    assert await ctx.click_log.log(first, dedup=True) == ""
    later = Click(new_click_id(at + 2000), at + 2000, code, "s", "p", "", device, "203.0.113.0", "Mozilla/5.0", "")
    assert await ctx.click_log.log(later, dedup=True) == first.click_id
    await drain(app)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT click_id, reason, original_click_id FROM clicks WHERE code = $1 "
                                "ORDER BY clicked_at", code)
        assert await conn.fetchval(ROLLUPS_MATCH, code) == 0
    assert [tuple(r) for r in rows] == [(first.click_id, None, None), (repeat.click_id, "ERR_DUP", first.click_id),
                                        (later.click_id, "ERR_DUP", first.click_id)]


@one_redis_node
async def test_clicks_the_release_before_shards_left_in_its_streams_are_stored(app: Starlette) -> None:
    # a rolling deploy: a web process of the old release logged a click into its own stream
    ctx = app.state.ctx
    shards = ctx.click_log.shards
    await drain(app)
    at = now_ms()
    click = Click(new_click_id(at), at, "OLDREL" + uuid.uuid4().hex[:6], "s", "p", "", device_hash("old"),
                  "203.0.113.0", "Mozilla/5.0", "")
    await ctx.redis.xadd(shards.legacy_streams[2], {"n": 1, "c": click.row()})
    await ctx.redis.incrby(shards.backlog(None), 1)
    assert await backlog(app) == 1
    await drain(app)
    async with ctx.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clicks WHERE click_id = $1", click.click_id) == 1
    assert await backlog(app) == 0


async def test_rows_and_spooled_clicks_of_the_release_before_via_are_stored_with_their_audience(
        app: Starlette) -> None:
    """A rolling deploy: the click log's streams still hold rows written before `via` (one field
    fewer), and a spool file the old payload (one element fewer)."""
    await drain(app)
    ctx = app.state.ctx
    code = "OLDROW" + uuid.uuid4().hex[:6]
    at = now_ms()
    iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
    old = Click(new_click_id(at), at, code, None, None, "", "d1", "1.1.1.0", iphone, "https://t.co/x")
    fields = old.row().split("\t")
    del fields[ROW_COLUMNS.index("via")]
    await ctx.redis.xadd(ctx.click_log.shards.streams[0], {"n": 1, "c": "\t".join(fields)})
    await ctx.redis.incrby(ctx.click_log.shards.backlog(0), 1)
    spooled = Click(new_click_id(at), at, code, None, None, "", "d2", "77.88.8.0", "", "")
    assert Click.from_payload(json.dumps(json.loads(spooled.payload())[:-1])) == spooled
    await drain(app)
    row = await stored_click(app, old.click_id) or {}
    assert tuple(row.get(k) for k in audience.DIMENSIONS) == (
        "AU", "mobile", "Mobile Safari UI/WKWebView", "iOS", "t.co", "link")
