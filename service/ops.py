"""Operations endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import metrics, openapi
from service.context import Context
from service.store import redis as keys

CHECK_TIMEOUT_S = 1.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _redis_ok(ctx: Context) -> bool:
    try:
        return bool(await asyncio.wait_for(ctx.redis.ping(), CHECK_TIMEOUT_S))
    except Exception:
        metrics.DEPENDENCY_ERRORS.labels("redis").inc()
        return False


async def _postgres_ok(ctx: Context) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), ctx.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)
    except Exception:
        metrics.DEPENDENCY_ERRORS.labels("postgres").inc()
        return False


async def readyz(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    redis_ok, postgres_ok = await asyncio.gather(_redis_ok(ctx), _postgres_ok(ctx))
    down = [name for name, ok in (("redis", redis_ok), ("postgres", postgres_ok)) if not ok]
    if down:
        return JSONResponse(
            {"status": "unavailable", "down": down,
             "error": {"code": "ERR_503", "message": "not ready: " + ", ".join(down) + " down"}},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})


async def _backlog(ctx: Context) -> float:
    """Clicks in the Redis streams plus those waiting in this host's spool (a Redis outage)."""
    spooled = await asyncio.to_thread(ctx.spool.pending)
    try:
        in_redis = await asyncio.wait_for(keys.backlog(ctx.redis, ctx.click_log.shards), CHECK_TIMEOUT_S)
    except Exception:
        metrics.DEPENDENCY_ERRORS.labels("redis").inc()
        return float(spooled) if spooled else math.nan
    return float(in_redis + spooled)


async def metrics_endpoint(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    body = metrics.exposition(await _backlog(ctx))
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(openapi.document())
