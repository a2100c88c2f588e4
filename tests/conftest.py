"""Real PostgreSQL and Redis, isolated per test run: a database and a Redis key prefix of its own."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from service.app import create_app
from service.settings import Settings
from tests.faults import Proxy

RUN = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
PG_ROOT = os.environ.get("MCODE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("MCODE_TEST_REDIS", "redis://127.0.0.1:6379/15")
# MCODE_TEST_REDIS may name the nodes of a Redis Cluster (comma-separated; scripts/dev.sh test
# starts one under .local/ and runs the suite against it too)
REDIS_CLUSTER = os.environ.get("MCODE_TEST_REDIS_CLUSTER") == "1"
_REDIS = urlsplit(REDIS_URL.split(",")[0])
REDIS_HOST, REDIS_PORT, REDIS_DB = _REDIS.hostname or "127.0.0.1", _REDIS.port or 6379, _REDIS.path.strip("/") or "0"


# Tests that put a proxy between the service and one Redis node, or use a database number: a
# cluster client follows the nodes' own addresses past any proxy, and a cluster has database 0 only.
one_redis_node = pytest.mark.skipif(REDIS_CLUSTER, reason="needs a single Redis node")


def drop_redis_keys(prefix: str) -> None:
    """Delete a run's keys from the test Redis, or from every node of the test cluster (each node
    holds its own slots' keys; a replica refuses the DELETE and is skipped)."""
    import redis as sync_redis

    for url in REDIS_URL.split(","):
        client = sync_redis.Redis.from_url(url)
        try:
            for name in list(client.scan_iter(match=f"{prefix}*", count=1000)):
                with contextlib.suppress(sync_redis.ResponseError):
                    client.delete(name)
        finally:
            client.close()


def redis_url_via(port: int) -> str:
    """The test Redis (its credentials and database) reached through a local proxy on `port`."""
    userinfo = _REDIS.netloc.rpartition("@")[0]
    return urlunsplit(_REDIS._replace(netloc=f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"))
DATABASE_URL = f"{PG_ROOT}/mcode_test_{RUN}"

ADMIN = "test-admin-token-0123456789"
SIGNING = "test-signing-key-0123456789"
SECRET = "test-event-secret-0123456789"
OLD_SECRET = "test-event-secret-old-012345"


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "env": "test",
        "database_url": DATABASE_URL,
        "redis_url": REDIS_URL,
        "redis_prefix": f"t{RUN}:",
        "public_url": "https://mc.example.net",
        "admin_tokens": (ADMIN,),
        "signing_keys": (SIGNING,),
        "event_secrets": (SECRET, OLD_SECRET),
        "embedded_writer": False,
        "cache_ttl_s": 0,
        "cookie_secure": True,
        "spool_dir": f"/tmp/mcode-test-spool-{RUN}",
    }
    return Settings(**(base | overrides))


@pytest.fixture(scope="session", autouse=True)
async def database() -> AsyncIterator[str]:
    yield DATABASE_URL
    conn = await asyncpg.connect(f"{PG_ROOT}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "mcode_test_{RUN}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def app() -> AsyncIterator[Starlette]:
    application = create_app(make_settings())
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def admin() -> dict[str, str]:
    return dict(ADMIN_HEADERS)


Maker = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def seller(client: httpx.AsyncClient) -> Maker:
    async def make(**fields: Any) -> dict[str, Any]:
        seller_id = fields.pop("seller_id", None) or uid("s")
        body = {"name": "Kid Shop", "status": "active", "verified": True, "affiliate_enabled": True} | fields
        r = await client.put(f"/v1/sellers/{seller_id}", json=body, headers=ADMIN_HEADERS)
        assert r.status_code in (200, 201), r.text
        data: dict[str, Any] = r.json()
        return data

    return make


@pytest.fixture
def product(client: httpx.AsyncClient) -> Maker:
    async def make(seller_id: str, **fields: Any) -> dict[str, Any]:
        product_id = fields.pop("product_id", None) or uid("p")
        body = {
            "seller_id": seller_id, "url": "https://www.aliexpress.com/item/100500.html?spm=a2g0o#reviews",
            "category": "toys", "status": "listed", "stock": 10,
        } | fields
        r = await client.put(f"/v1/products/{product_id}", json=body, headers=ADMIN_HEADERS)
        assert r.status_code in (200, 201), r.text
        data: dict[str, Any] = r.json()
        return data

    return make


UTM = {"utm_source": "ig", "utm_medium": "social", "utm_campaign": "ig_202405_kd_summer_sale", "utm_content": "reel1"}


@pytest.fixture
def code(client: httpx.AsyncClient, seller: Maker, product: Maker) -> Maker:
    """A fresh seller, product and code; fields override the code's values."""

    async def make(**fields: Any) -> dict[str, Any]:
        s = await seller()
        p = await product(s["seller_id"])
        body = {"seller_id": s["seller_id"], "product_id": p["product_id"], **UTM} | fields
        r = await client.post("/v1/codes", json=body, headers=ADMIN_HEADERS)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    return make


@contextlib.asynccontextmanager
async def app_behind_redis_proxy(**overrides: Any) -> AsyncIterator[tuple[Any, Proxy]]:
    """An application whose Redis is reached through a proxy the test can cut."""
    if REDIS_CLUSTER:
        pytest.skip("needs a single Redis node: a cluster client follows the nodes' own addresses past a proxy")
    proxy = await Proxy(REDIS_PORT, REDIS_HOST).start()
    application = create_app(make_settings(redis_url=redis_url_via(proxy.port), **overrides))
    try:
        async with LifespanManager(application):
            yield application, proxy
    finally:
        await proxy.close()


async def drain(app: Starlette) -> None:
    """Run a writer until every click answered so far is in Postgres."""
    from service.app import new_writer
    from service.store import redis as keys

    ctx = app.state.ctx
    await ctx.click_log.drain()
    writer = new_writer(ctx)
    writer.name = "test-drain"
    try:
        for _ in range(200):
            await writer.step()
            if await keys.backlog(ctx.redis, ctx.click_log.shards) == 0:
                return
        raise AssertionError("the click streams did not drain")
    finally:
        await writer.close()


async def stored_click(app: Starlette, click_id: str) -> dict[str, Any] | None:
    async with app.state.ctx.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM clicks WHERE click_id = $1", click_id)
    return dict(row) if row else None
