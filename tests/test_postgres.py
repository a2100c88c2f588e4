import asyncio

import asyncpg

from service.store import postgres
from service.store.clicks import REASON_COLUMNS
from tests.conftest import PG_ROOT, RUN


async def test_concurrent_migrations_apply_once() -> None:
    url = f"{PG_ROOT}/mcode_test_{RUN}_mig"
    try:
        results = await asyncio.gather(*(postgres.migrate(url) for _ in range(4)))
        applied = [name for names in results for name in names]
        assert sorted(applied) == sorted(name for _, name, _ in postgres.migration_files())
        conn = await asyncpg.connect(url)
        try:
            count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
        assert count == len(postgres.migration_files())
        assert await postgres.migrate(url) == []
    finally:
        conn = await asyncpg.connect(f"{PG_ROOT}/postgres")
        await conn.execute(f'DROP DATABASE IF EXISTS "mcode_test_{RUN}_mig" WITH (FORCE)')
        await conn.close()


async def test_quarter_hour_rollups_migration_counts_kept_clicks_again_and_keeps_hours_without_clicks() -> None:
    """0009 on a database whose hourly rollups were kept by the old writer: quarter hours from
    the clicks where they are kept, an hour whose clicks are gone kept whole on its first quarter,
    and hourly rows that had drifted from their clicks made their sums again."""
    url = f"{PG_ROOT}/mcode_test_{RUN}_mig9"
    reasons = ", ".join(f'"{r}"' for r in REASON_COLUMNS)
    try:
        await postgres.create_database_if_missing(url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                               " applied_at timestamptz NOT NULL DEFAULT now())")
            for version, name, sql in postgres.migration_files():
                if version < 9:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, name)
            kept = [("a1", "10:05", None), ("a2", "10:20", "ERR_BOT"), ("a3", "10:35", None),
                    ("a4", "10:50", "ERR_DUP"), ("a5", "10:59:59.999", None), ("c1", "12:40", None),
                    ("c2", "12:41", "ERR_404")]
            for click_id, at, reason in kept:
                await conn.execute(
                    "INSERT INTO clicks (click_id, clicked_at, code, seller_id, reason, device_hash, ip, user_agent, "
                    "referer) VALUES ($1, $2::text::timestamptz, $3, 's', $4, 'd', '', '', $5)",
                    click_id, f"2024-01-01 {at}+00", "A" if click_id < "b" else "C", reason,
                    "https://Shop.Example:8443/p?q=1" if click_id == "a3" else "")
            # the old writer's hourly rows: A as its clicks, B's clicks dropped, C's drifted
            await conn.execute(f"""
                INSERT INTO click_rollups (code, hour, seller_id, clicks, valid_clicks, {reasons})
                SELECT code, date_trunc('hour', clicked_at, 'UTC'), 's', count(*),
                       count(*) FILTER (WHERE reason IS NULL),
                       {", ".join(f"count(*) FILTER (WHERE reason = '{r}')" for r in REASON_COLUMNS)}
                FROM clicks GROUP BY 1, 2""")
            await conn.execute(f"""INSERT INTO click_rollups (code, hour, seller_id, clicks, valid_clicks, {reasons})
                                   VALUES ('B', '2024-01-01 11:00+00', 's', 5, 3, 0, 0, 0, 0, 0, 2, 0)""")
            await conn.execute("UPDATE click_rollups SET clicks = 7, valid_clicks = 6 WHERE code = 'C'")
        finally:
            await conn.close()
        assert "0009_click_rollups_15m.sql" in await postgres.migrate(url)
        conn = await asyncpg.connect(url)
        try:
            quarters = [(r["code"], r["quarter"].strftime("%H:%M"), r["clicks"], r["valid_clicks"], r["ERR_BOT"],
                         r["ERR_DUP"], r["ERR_404"]) for r in await conn.fetch(
                "SELECT * FROM click_rollups_15m ORDER BY code, quarter")]
            assert quarters == [("A", "10:00", 1, 1, 0, 0, 0), ("A", "10:15", 1, 0, 1, 0, 0),
                                ("A", "10:30", 1, 1, 0, 0, 0), ("A", "10:45", 2, 1, 0, 1, 0),
                                ("B", "11:00", 5, 3, 2, 0, 0), ("C", "12:30", 2, 1, 0, 0, 1)]
            hours = [(r["code"], r["hour"].strftime("%H:%M"), r["clicks"], r["valid_clicks"]) for r in await conn.fetch(
                "SELECT * FROM click_rollups ORDER BY code, hour")]
            assert hours == [("A", "10:00", 5, 3), ("B", "11:00", 5, 3), ("C", "12:00", 2, 1)]
            # 0010: the seller's audience rollups of those clicks, unknown but for their referrer and via
            referrers = [(r["quarter"].strftime("%H:%M"), r["value"], r["clicks"]) for r in await conn.fetch(
                "SELECT * FROM seller_audience_15m WHERE dimension = 'referrer' ORDER BY quarter, value")]
            assert referrers == [("10:00", "direct", 1), ("10:15", "direct", 1), ("10:30", "shop.example", 1),
                                 ("10:45", "direct", 2), ("11:00", "direct", 5), ("12:30", "direct", 2)]
            for dimension, value in (("country", "ZZ"), ("device", "other"), ("via", "link")):
                hours_of = [(r["seller_id"], r["hour"].strftime("%H:%M"), r["value"], r["clicks"], r["valid_clicks"])
                            for r in await conn.fetch("SELECT * FROM seller_audience WHERE dimension = $1 "
                                                      "ORDER BY hour", dimension)]
                assert hours_of == [("s", "10:00", value, 5, 3), ("s", "11:00", value, 5, 3),
                                    ("s", "12:00", value, 2, 1)], dimension
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(f"{PG_ROOT}/postgres")
        await conn.execute(f'DROP DATABASE IF EXISTS "mcode_test_{RUN}_mig9" WITH (FORCE)')
        await conn.close()
