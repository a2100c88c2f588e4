import asyncio

import httpx
from asgi_lifespan import LifespanManager

from service.app import close_context, create_app, open_context
from service.records import Records
from service.store import postgres
from service.urls import HostPolicy
from tests.conftest import ADMIN_HEADERS, DATABASE_URL, Maker, make_settings
from tests.faults import Proxy
from tests.test_redirect import BUYER

TTL = 0.3
JSON = BUYER | {"accept": "application/json"}


async def test_changes_reach_redirects_after_the_cache_ttl(client: httpx.AsyncClient, code: Maker,
                                                           seller: Maker) -> None:
    app = create_app(make_settings(cache_ttl_s=TTL))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as buyer:
            c = await code()
            url = f"/e/{c['code']}"
            assert (await buyer.get(url, headers=JSON)).status_code == 302
            await seller(seller_id=c["seller_id"], status="frozen")
            # within the TTL the worker answers from memory, without asking Postgres
            assert (await buyer.get(url, headers=JSON)).status_code == 302
            await asyncio.sleep(TTL + 0.05)
            assert (await buyer.get(url, headers=JSON)).status_code == 403
            await seller(seller_id=c["seller_id"])
            await client.patch(url.replace("/e/", "/v1/codes/"), json={"active": False}, headers=ADMIN_HEADERS)
            await asyncio.sleep(TTL + 0.05)
            assert (await buyer.get(url, headers=JSON)).status_code == 410


async def test_postgres_down_redirects_continue_from_memory_or_redis(app: object, code: Maker) -> None:
    proxy = await Proxy(5432).start()
    settings = make_settings(cache_ttl_s=0)
    pool = await postgres.create_pool(DATABASE_URL.replace(":5432/", f":{proxy.port}/"), max_size=2)
    ctx = await open_context(settings)
    records = Records(pool, ctx.redis, settings.redis_prefix, 0, HostPolicy(settings.allowed_hosts))
    try:
        seen, fresh = await code(), await code()
        assert (await records.get(seen["code"]))[0] is not None  # this worker has seen it
        other = Records(ctx.pool, ctx.redis, settings.redis_prefix, 0, HostPolicy(settings.allowed_hosts))
        assert (await other.get(fresh["code"]))[0] is not None  # another worker left a copy in Redis
        await asyncio.gather(*other.copying)  # the copy is written in the background
        await proxy.cut()
        record, allowed = await records.get(seen["code"])
        assert record is not None and record.code == seen["code"] and allowed
        record, _ = await records.get(fresh["code"])
        assert record is not None and record.code == fresh["code"]
    finally:
        await pool.close()
        await proxy.close()
        await close_context(ctx)
