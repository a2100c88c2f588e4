"""The ASGI application: routes, lifespan (pools, background writer) and error handlers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service import catalog, imports, ops
from service.codes import Signer
from service.context import Context
from service.errors import ApiError, handle_api_error, handle_http_exception, handle_unexpected
from service.settings import Settings
from service.store import postgres
from service.urls import HostPolicy

log = logging.getLogger("mcode")

ROUTES = [
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
    Route("/v1/codes/{code}", catalog.patch_code, methods=["PATCH"]),
]


async def open_context(settings: Settings) -> Context:
    await postgres.migrate(settings.database_url)
    pool = await postgres.create_pool(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    return Context(
        settings=settings, pool=pool, redis=redis,
        signer=Signer(settings.signing_keys), hosts=HostPolicy(settings.allowed_hosts),
    )


async def close_context(ctx: Context) -> None:
    await ctx.redis.aclose()
    await ctx.pool.close()


def create_app(settings: Settings | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = await open_context(settings or Settings())
        app.state.ctx = ctx
        try:
            yield
        finally:
            await close_context(ctx)

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )


class _LazyApp:
    """`service.app:app` for uvicorn: reads the environment when the server starts, not on import."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = create_app(Settings())
        await self._app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        if self._app is None:
            self._app = create_app(Settings())
        return getattr(self._app, name)


app = _LazyApp()
