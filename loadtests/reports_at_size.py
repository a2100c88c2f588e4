"""Reports at size: seed N clicks (COPY) across 1,000 codes and 90 days, then time reports.

    .venv/bin/python loadtests/reports_at_size.py [--clicks 10000000] [--sellers 50] [--reuse]

Codes are spread over --sellers sellers, except one "big" seller that owns a fifth of them.
Prints the median and p95 of a 30-day report grouped by day,utm_campaign for a typical
seller and the big one, and the same 30-day report early and late in the history (the time
must not grow with history), in UTC and in zones whose midnights cut UTC hours (Asia/Kolkata
at :30, Asia/Kathmandu at :15: read from the quarter-hour rollups at those hours); then the
rollups' rows and bytes per million clicks. Uses its own database, `mcode_reports_bench`.

With --retention DAYS, then drops the day partitions older than DAYS (as the writer's
housekeeping would), checks that reports over the dropped days give the same numbers as
before, and times them again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import clicks as click_sql  # noqa: E402
from service.store import postgres  # noqa: E402

PG_ROOT = os.environ.get("MCODE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB = "mcode_reports_bench"
URL = f"{PG_ROOT}/{DB}"
ADMIN = "reports-bench-admin-0123456789"
CODES = 1000
DAYS = 90
REASONS = [None] * 84 + ["ERR_BOT"] * 10 + ["ERR_DUP"] * 4 + ["ERR_PREFETCH", "ERR_404"]
CHUNK = 50_000
# An audience as a seller's might be: 40 countries, a dozen (device, browser, OS), 12 referrers.
COUNTRIES = list(("RU", "BR", "US", "ES", "FR", "PL", "KR", "DE", "IL", "UA", "TR", "IT", "NL", "MX", "CL",
                         "SA", "AE", "JP", "CN", "KZ", "BY", "UZ", "GB", "CA", "AU", "IN", "ID", "TH", "VN", "PH",
                         "MY", "EG", "MA", "NG", "AR", "CO", "PE", "PT", "BE", "ZZ"))
AGENTS = [("mobile", "Chrome Mobile", "Android"), ("mobile", "Mobile Safari", "iOS"), ("desktop", "Chrome", "Windows"),
          ("desktop", "Edge", "Windows"), ("desktop", "Safari", "Mac OS X"), ("desktop", "Firefox", "Windows"),
          ("mobile", "Samsung Internet", "Android"), ("tablet", "Mobile Safari", "iOS"),
          ("mobile", "Instagram", "iOS"), ("mobile", "Facebook", "Android"), ("tablet", "Chrome", "Android"),
          ("other", "Googlebot", "Other")]
REFERRERS = ["direct", "l.instagram.com", "www.instagram.com", "t.co", "vk.com", "m.vk.com", "www.tiktok.com",
             "www.youtube.com", "mail.google.com", "lm.facebook.com", "web.telegram.org", "www.pinterest.com"]
AUDIENCE_ZONES = ("UTC", "Asia/Kolkata")
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu")


async def seed(n_clicks: int, n_sellers: int) -> date:
    admin = await asyncpg.connect(f"{PG_ROOT}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    await admin.close()
    await postgres.migrate(URL)
    conn = await asyncpg.connect(URL)
    last_day = datetime.now(UTC).date()
    first_day = last_day - timedelta(days=DAYS - 1)
    try:
        await click_sql.ensure_partitions(conn, last_day, days_back=DAYS)
        sellers = [f"seller{i:03d}" for i in range(n_sellers)]
        owner = ["big" if i < CODES // 5 else sellers[i % n_sellers] for i in range(CODES)]
        for sid in [*sellers, "big"]:
            await conn.execute("INSERT INTO sellers VALUES ($1, $1, 'active', true, true)", sid)
        for i in range(CODES):
            await conn.execute("INSERT INTO products (product_id, seller_id, url, category, status, stock) "
                               "VALUES ($1, $2, 'https://www.aliexpress.com/i.html', 'toys', 'listed', 5)",
                               f"p{i}", owner[i])
            await conn.execute(
                "INSERT INTO codes (code, seller_id, product_id, utm_source, utm_medium, utm_campaign, "
                "utm_content, channel) VALUES ($1, $2, $3, 'ig', 'social', $4, 'c', 'instagram')",
                f"code{i:010d}", owner[i], f"p{i}", f"ig_2024{(i % 12) + 1:02d}_theme{i % 7}")
        rng = random.Random(7)
        span_ms = DAYS * 86_400_000
        start_ms = int(datetime.combine(first_day, datetime.min.time(), UTC).timestamp() * 1000)
        started = time.perf_counter()
        written = 0
        while written < n_clicks:
            batch = []
            for _ in range(min(CHUNK, n_clicks - written)):
                i = rng.randrange(CODES)
                at_ms = start_ms + rng.randrange(span_ms)
                reason = rng.choice(REASONS)
                device, browser, os = rng.choice(AGENTS)
                batch.append((f"{at_ms:012x}{rng.getrandbits(64):016x}", datetime.fromtimestamp(at_ms / 1000, UTC),
                               f"code{i:010d}", owner[i], f"p{i}", reason, f"{rng.getrandbits(64):x}",
                               "203.0.113.0", "Mozilla/5.0", "", None, rng.choice(COUNTRIES), device, browser, os,
                               rng.choice(REFERRERS), "qr" if rng.random() < 0.1 else "link"))
            await conn.copy_records_to_table("clicks", records=batch, columns=click_sql.COLUMNS)
            written += len(batch)
            print(f"\rseeded {written:,} clicks ({written / (time.perf_counter() - started):,.0f}/s)",
                  end="", flush=True)
        print()
        started = time.perf_counter()
        await click_sql.recount_rollups(conn)
        await conn.execute("ANALYZE")
        print(f"rollups (hourly and quarter-hour) built in {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()
    return last_day


async def report(client: httpx.AsyncClient, seller: str, start: date, end: date, tz: str = "UTC",
                 group_by: str = "day,utm_campaign") -> Any:
    params = {"seller_id": seller, "group_by": group_by, "from": start.isoformat(), "to": end.isoformat(), "tz": tz}
    r = await client.get("/v1/reports/traffic", params=params, headers={"Authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return r.json()


async def time_report(client: httpx.AsyncClient, seller: str, start: date, end: date, runs: int,
                      tz: str = "UTC", group_by: str = "day,utm_campaign") -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        await report(client, seller, start, end, tz, group_by)
        times.append((time.perf_counter() - t) * 1000)
    return times


async def rollup_sizes() -> None:
    conn = await asyncpg.connect(URL)
    try:
        n_clicks = await conn.fetchval("SELECT count(*) FROM clicks")
        for table in ("clicks", "click_rollups", "click_rollups_15m", "click_days", "seller_audience",
                      "seller_audience_15m"):
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            size = int(await conn.fetchval(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.oid = $1::regclass "
                "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)", table))
            per_m = 1_000_000 / n_clicks
            print(f"{table:<20} {rows:>12,} rows {size / 2**20:>9,.1f} MiB   per million clicks: "
                  f"{rows * per_m:>10,.0f} rows {size * per_m / 2**20:>8,.1f} MiB (tables and indexes)")
    finally:
        await conn.close()


async def check_retention(client: httpx.AsyncClient, last_day: date, days: int, runs: int) -> None:
    """Drop the partitions past `days`, then compare reports over the dropped days with before."""
    early = (last_day - timedelta(days=DAYS - 1), last_day - timedelta(days=DAYS - 30))
    queries = [(seller, tz, group_by) for seller in ("seller001", "big") for tz in ZONES
               for group_by in ("day,utm_campaign", "day,code")]
    before = [await report(client, seller, *early, tz, group_by) for seller, tz, group_by in queries]
    conn = await asyncpg.connect(URL)
    try:
        started = time.perf_counter()
        dropped = await click_sql.drop_expired_partitions(conn, days, today=last_day)
        print(f"retention {days} days: dropped {len(dropped)} partitions in {time.perf_counter() - started:.1f} s; "
              f"{await conn.fetchval('SELECT count(*) FROM clicks'):,} clicks kept")
    finally:
        await conn.close()
    after = [await report(client, seller, *early, tz, group_by) for seller, tz, group_by in queries]
    same = sum(a == b for a, b in zip(before, after, strict=True))
    print(f"reports over dropped days equal to before: {same} of {len(queries)}")
    for tz in ZONES:
        print(line(f"typical seller, first 30 days (dropped), tz={tz}",
                   await time_report(client, "seller001", *early, runs, tz=tz)))


def line(label: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"{label:<52} median {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--sellers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seller", default="seller001",
                        help="the 'typical' seller to time (with --sellers 1, seller000 owns 80%% of the clicks)")
    parser.add_argument("--reuse", action="store_true", help="keep the seeded database from a previous run")
    parser.add_argument("--recount", action="store_true", help="with --reuse: migrate and rebuild the rollups")
    parser.add_argument("--retention", type=int, default=0,
                        help="afterwards drop the partitions older than this many days and report again")
    args = parser.parse_args()
    last_day = datetime.now(UTC).date() if args.reuse else await seed(args.clicks, args.sellers)
    if args.reuse and args.recount:
        await postgres.migrate(URL)
        conn = await asyncpg.connect(URL)
        started = time.perf_counter()
        await click_sql.recount_rollups(conn)
        await conn.execute("ANALYZE")
        await conn.close()
        print(f"rollups (hourly and quarter-hour) built in {time.perf_counter() - started:.0f} s")
    settings = Settings(env="dev", database_url=URL, admin_tokens=(ADMIN,), embedded_writer=False,
                        redis_prefix="reportsbench:")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        recent = (last_day - timedelta(days=29), last_day)
        early = (last_day - timedelta(days=DAYS - 1), last_day - timedelta(days=DAYS - 30))
        await time_report(client, args.seller, *recent, 2)  # warm the cache
        print(f"{args.clicks:,} clicks, {CODES} codes, {DAYS} days; 30-day report grouped by day,utm_campaign")
        print(line("typical seller (of 50), last 30 days", await time_report(client, args.seller, *recent,
                                                                             args.runs)))
        print(line("typical seller, first 30 days of history", await time_report(client, args.seller, *early,
                                                                                  args.runs)))
        print(line("big seller (200 codes, 20% of clicks), last 30 days",
                   await time_report(client, "big", *recent, args.runs)))
        for tz in ZONES[1:]:
            print(line(f"typical seller, last 30 days, tz={tz}",
                       await time_report(client, args.seller, *recent, args.runs, tz=tz)))
            print(line(f"big seller, last 30 days, tz={tz}",
                       await time_report(client, "big", *recent, args.runs, tz=tz)))
        for tz in ZONES[:2]:
            print(line(f"big seller, last 30 days, day,code, tz={tz}",
                       await time_report(client, "big", *recent, args.runs, tz=tz, group_by="day,code")))
        for group_by in ("day,country", "day,device", "day,referrer", "via,utm_campaign"):
            for tz in AUDIENCE_ZONES:
                print(line(f"typical seller, {group_by}, tz={tz}",
                           await time_report(client, args.seller, *recent, args.runs, tz=tz, group_by=group_by)))
                print(line(f"big seller, {group_by}, tz={tz}",
                           await time_report(client, "big", *recent, args.runs, tz=tz, group_by=group_by)))
        await rollup_sizes()
        if args.retention:
            await check_retention(client, last_day, args.retention, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
