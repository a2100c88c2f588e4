"""The error envelope of the SPEC: every refusal is an ApiError rendered one way."""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.outages import ThrottledOutages

log = logging.getLogger("mcode")

STATUS = {
    "ERR_400": 400,
    "ERR_401": 401,
    "ERR_403": 403,
    "ERR_404": 404,
    "ERR_405": 405,
    "ERR_409": 409,
    "ERR_410": 410,
    "ERR_413": 413,
    "ERR_422": 422,
    "ERR_500": 500,
    "ERR_503": 503,
}

class ApiError(Exception):
    def __init__(self, code: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            err["fields"] = self.fields
        return {"error": err}


def invalid(fields: dict[str, str], message: str = "some fields are invalid") -> ApiError:
    return ApiError("ERR_422", message, fields)


def field_errors(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        name = ".".join(str(p) for p in err["loc"]) or "body"
        fields.setdefault(name, err["msg"])
    return fields


def json_error(err: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_error(exc, headers={"retry-after": str(RETRY_AFTER_S)} if exc.code == "ERR_503" else None)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err = ApiError("ERR_405", "method not allowed on this path")
        return json_error(err, headers=dict(exc.headers or {}))
    code = f"ERR_{exc.status_code}" if f"ERR_{exc.status_code}" in STATUS else "ERR_400"
    message = "not found" if exc.status_code == 404 else str(exc.detail)
    return json_error(ApiError(code, message))


# Failures that say a dependency is down or stalled, not that the request or our code is wrong:
# the client is told to retry (503, Retry-After), and the log gets a line, not a traceback.
UNAVAILABLE = (ConnectionError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
               asyncpg.OperatorInterventionError, asyncpg.TooManyConnectionsError, RedisConnectionError,
               RedisTimeoutError, RedisClusterException)
RETRY_AFTER_S = 5
# API requests have no moment that proves a dependency back, so their outage is told at most
# once every 10 s, with the requests answered 503 since.
OUTAGES = ThrottledOutages(log, "request(s) answered 503")


async def handle_unavailable(request: Request, exc: Exception) -> Response:
    OUTAGES.note("redis" if isinstance(exc, RedisError) else "postgres", exc, time.monotonic())
    err = ApiError("ERR_503", "a service this request needs is unavailable; retry shortly")
    return json_error(err, headers={"retry-after": str(RETRY_AFTER_S)})


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_error(ApiError("ERR_500", "internal error"))
