import asyncio

import asyncpg

from service.store import postgres
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
