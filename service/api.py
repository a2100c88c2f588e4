"""Conventions of the /v1 JSON API: reading bodies, validating them, cursors, rendering answers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.errors import ApiError, field_errors, invalid

M = TypeVar("M", bound=BaseModel)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot render {type(value).__name__}")


class ApiResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_default, ensure_ascii=False, separators=(",", ":")).encode()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ERR_413 as soon as it passes `limit` bytes (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("ERR_413", f"body over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("ERR_413", f"body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, or ERR_400 saying why it is not one.

    The Content-Type is not insisted on: callers authenticate with a bearer token, so there is
    no form-post forgery to fend off, and `curl -d` (form-encoded by default) should just work.
    """
    return parse_object(await read_body(request, limit))


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("ERR_400", "body is not valid JSON (send Content-Type: application/json)") from None
    if not isinstance(data, dict):
        raise ApiError("ERR_400", "body must be a JSON object")
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise invalid(field_errors(exc)) from None


def limit_param(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid({"limit": f"a whole number from 1 to {MAX_LIMIT}"})
    return int(raw)


def encode_cursor(*values: Any) -> str:
    text = json.dumps(values, default=_default, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def keyset_cursor(request: Request) -> tuple[datetime, str] | None:
    """The (time, id) after which the next page of a newest-first list starts."""
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    try:
        when, ident = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return datetime.fromisoformat(str(when).replace("Z", "+00:00")), str(ident)
    except (ValueError, TypeError):
        raise invalid({"cursor": "not a cursor this API gave out"}) from None


def parse_time(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            if parsed.tzinfo is not None and 1970 <= parsed.astimezone(UTC).year <= 9998:
                return parsed
        except (ValueError, OverflowError):
            pass
    raise invalid({field: "an RFC 3339 time with an offset, e.g. 2024-05-01T12:00:00Z"})
