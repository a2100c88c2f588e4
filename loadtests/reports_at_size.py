"""Reports at size: seed N clicks (COPY) across 1,000 codes and 90 days, then time reports.

    .venv/bin/python loadtests/reports_at_size.py [--clicks 10000000] [--sellers 50] [--reuse]

Codes are spread over --sellers sellers, except one "big" seller that owns a fifth of them.
Prints the median and p95 of a 30-day report grouped by day,utm_campaign for a typical
seller and the big one, and the same 30-day report early and late in the history (the time
must not grow with history). Uses its own database, `mcode_reports_bench`.
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
                batch.append((f"{at_ms:012x}{rng.getrandbits(64):016x}", datetime.fromtimestamp(at_ms / 1000, UTC),
                               f"code{i:010d}", owner[i], f"p{i}", reason, f"{rng.getrandbits(64):x}",
                               "203.0.113.0", "Mozilla/5.0", "", None))
            await conn.copy_records_to_table("clicks", records=batch, columns=click_sql.COLUMNS)
            written += len(batch)
            print(f"\rseeded {written:,} clicks ({written / (time.perf_counter() - started):,.0f}/s)",
                  end="", flush=True)
        print()
        started = time.perf_counter()
        await click_sql.recount_rollups(conn)
        await conn.execute("ANALYZE")
        print(f"hourly rollups built in {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()
    return last_day


async def time_report(client: httpx.AsyncClient, seller: str, start: date, end: date, runs: int,
                      tz: str = "UTC") -> list[float]:
    params = {"seller_id": seller, "group_by": "day,utm_campaign", "from": start.isoformat(), "to": end.isoformat(),
              "tz": tz}
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = await client.get("/v1/reports/traffic", params=params, headers={"Authorization": f"Bearer {ADMIN}"})
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return times


def line(label: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"{label:<52} median {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--sellers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep the seeded database from a previous run")
    parser.add_argument("--recount", action="store_true", help="with --reuse: migrate and rebuild the rollups")
    args = parser.parse_args()
    last_day = datetime.now(UTC).date() if args.reuse else await seed(args.clicks, args.sellers)
    if args.reuse and args.recount:
        await postgres.migrate(URL)
        conn = await asyncpg.connect(URL)
        started = time.perf_counter()
        await click_sql.recount_rollups(conn)
        await conn.execute("ANALYZE")
        await conn.close()
        print(f"hourly rollups built in {time.perf_counter() - started:.0f} s")
    settings = Settings(env="dev", database_url=URL, admin_tokens=(ADMIN,), embedded_writer=False,
                        redis_prefix="reportsbench:")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        recent = (last_day - timedelta(days=29), last_day)
        early = (last_day - timedelta(days=DAYS - 1), last_day - timedelta(days=DAYS - 30))
        await time_report(client, "seller001", *recent, 2)  # warm the cache
        print(f"{args.clicks:,} clicks, {CODES} codes, {DAYS} days; 30-day report grouped by day,utm_campaign")
        print(line("typical seller (of 50), last 30 days", await time_report(client, "seller001", *recent,
                                                                             args.runs)))
        print(line("typical seller, first 30 days of history", await time_report(client, "seller001", *early,
                                                                                  args.runs)))
        print(line("big seller (200 codes, 20% of clicks), last 30 days",
                   await time_report(client, "big", *recent, args.runs)))
        print(line("typical seller, last 30 days, tz=Asia/Kolkata (raw clicks)",
                   await time_report(client, "seller001", *recent, args.runs, tz="Asia/Kolkata")))


if __name__ == "__main__":
    asyncio.run(main())
