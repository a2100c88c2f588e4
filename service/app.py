"""The ASGI application: routes, lifespan (pools, background writer) and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service import catalog, console, events, imports, metrics, ops, redirect, reports
from service.api import StorableText
from service.attribution import Clicks
from service.bots import Bots
from service.clicks import ClickLog
from service.codes import Signer
from service.context import Context
from service.devices import Devices
from service.errors import (
    UNAVAILABLE,
    ApiError,
    handle_api_error,
    handle_http_exception,
    handle_unavailable,
    handle_unexpected,
)
from service.pages import BuyerPages
from service.records import Records
from service.settings import Settings, describe
from service.spool import Spool
from service.store import postgres, resp
from service.store import redis as keys
from service.urls import HostPolicy
from service.writer import WRITER_REDIS_TIMEOUT_S, Writer

log = logging.getLogger("mcode")

ROUTES = [
    Route("/e/{code}", redirect.Endpoint(), methods=["GET", "HEAD"]),
    Route("/healthz", ops.healthz, methods=["GET"]),
    Route("/readyz", ops.readyz, methods=["GET"]),
    Route("/metrics", ops.metrics_endpoint, methods=["GET"]),
    Route("/openapi.json", ops.openapi_endpoint, methods=["GET"]),
    Route("/v1/sellers/{seller_id}", catalog.put_seller, methods=["PUT"]),
    Route("/v1/sellers/{seller_id}", catalog.get_seller, methods=["GET"]),
    Route("/v1/sellers/{seller_id}/keys", catalog.issue_key, methods=["POST"]),
    Route("/v1/products/{product_id}", catalog.put_product, methods=["PUT"]),
    Route("/v1/products/{product_id}", catalog.get_product, methods=["GET"]),
    Route("/v1/commission-rates", catalog.list_rates, methods=["GET"]),
    Route("/v1/commission-rates/{category}", catalog.put_rate, methods=["PUT"]),
    Route("/v1/codes", catalog.post_code, methods=["POST"]),
    Route("/v1/codes", catalog.list_codes, methods=["GET"]),
    Route("/v1/codes/bulk", imports.post_bulk, methods=["POST"]),
    Route("/v1/codes/{code}", catalog.get_code, methods=["GET"]),
    Route("/v1/codes/{code}/qr", catalog.get_code_qr, methods=["GET"]),
    Route("/v1/codes/{code}", catalog.patch_code, methods=["PATCH"]),
    Route("/v1/events", events.post_event, methods=["POST"]),
    Route("/v1/reports/traffic", reports.traffic, methods=["GET"]),
    Route("/v1/reports/invalid-clicks", reports.invalid_clicks, methods=["GET"]),
    *console.ROUTES,
]


async def open_context(settings: Settings) -> Context:
    await postgres.migrate(settings.database_url)
    pool = await postgres.create_pool(settings.database_url)
    redis = await keys.client(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    hosts = HostPolicy(settings.allowed_hosts)
    shards = keys.Shards(settings.redis_prefix, settings.click_streams, cluster=isinstance(redis, RedisCluster))
    # One folder per database and key prefix: two deployments on a host never replay each other's clicks.
    spool = Spool(settings.spool_dir, namespace=f"{settings.database_url}|{settings.redis_prefix}")
    return Context(
        settings=settings, pool=pool, redis=redis, signer=Signer(settings.signing_keys), hosts=hosts,
        # A pool of its own: API requests holding connections must never keep a buyer waiting.
        records=Records(await postgres.create_pool(settings.database_url, max_size=2), redis, settings.redis_prefix,
                        settings.cache_ttl_s, hosts),
        devices=Devices(settings.trusted_networks, settings.signing_keys[0], settings.cookie_secure),
        bots=Bots(),
        spool=spool,
        click_log=ClickLog(resp.Redis(settings.redis_url), shards, settings.dedup_window_s,
                           settings.attribution_window_s, spool),
        attribution=Clicks(redis, shards, settings.attribution_window_s, settings.clock_skew_s),
        pages=BuyerPages(settings.fallback_url),
    )


async def close_context(ctx: Context) -> None:
    await ctx.click_log.drain()
    await asyncio.gather(*ctx.records.copying, return_exceptions=True)
    await ctx.click_log.redis.close()
    await ctx.redis.aclose()
    await ctx.records.pool.close()
    await ctx.pool.close()


def new_writer(ctx: Context) -> Writer:
    """A writer with a Redis client of its own (close it with Writer.close): its replies are large
    and read in many chunks, which in a busy web worker can outlast the hot path's 2 s timeout."""
    s = ctx.settings
    redis = keys.client_for(s.redis_url, isinstance(ctx.redis, RedisCluster), socket_timeout=WRITER_REDIS_TIMEOUT_S,
                            socket_connect_timeout=2)
    return Writer(ctx.pool, redis, ctx.click_log.shards, ctx.spool, s.dedup_window_s,
                  retention_days=s.click_retention_days)


def create_app(settings: Settings | None = None) -> HotPath:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = await open_context(settings or Settings())
        app.state.ctx = ctx
        await ctx.click_log.start()
        writer = new_writer(ctx) if ctx.settings.embedded_writer else None
        task = asyncio.create_task(writer.run()) if writer else None
        try:
            yield
        finally:
            # Clicks answered up to now reach Redis (or the spool); the writer commits what it read.
            await ctx.click_log.drain()
            if writer and task:
                writer.stop()
                await task
                await writer.close()
            await close_context(ctx)
            metrics.REDIRECTS.flush()

    return HotPath(Starlette(
        routes=ROUTES,
        middleware=[Middleware(StorableText)],
        lifespan=lifespan,
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            **dict.fromkeys(UNAVAILABLE, handle_unavailable),
            Exception: handle_unexpected,
        },
    ))


class HotPath:
    """Answers GET/HEAD /e/{code} ahead of Starlette's middleware and router: redirects are
    most of the traffic, and those layers cost more than the redirect's own judgement.
    Everything else, the lifespan included, goes to the Starlette application."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] == "http" and path.startswith("/e/") and len(path) > 3 and "/" not in path[3:]
                and scope["method"] in ("GET", "HEAD")):
            try:
                await redirect.redirect(self.state.ctx, scope, receive, send)
            except Exception:
                log.exception("unhandled error on %s %s", scope["method"], path)
                await self.state.ctx.pages.send(send, redirect.read_headers(scope["headers"]), "ERR_500")
            return
        await self.app(scope, receive, send)


class _LazyApp:
    """`service.app:app` for uvicorn: reads the environment when the server starts, not on import."""

    def __init__(self) -> None:
        self._app: HotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app(Settings())
            except ValidationError as exc:
                if scope["type"] != "lifespan":
                    raise
                # uvicorn takes a lifespan that raises for one it does not support, and would serve
                # a service that fails every request: say why, in one line, and stop it
                await receive()
                await send({"type": "lifespan.startup.failed", "message": f"mcode: refusing to start: {describe(exc)}"})
                return
        await self._app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        if self._app is None:
            self._app = create_app(Settings())
        return getattr(self._app, name)


app = _LazyApp()
