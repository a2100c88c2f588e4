"""Conventions of the /v1 JSON API: reading bodies, validating them, cursors, rendering answers."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ApiError, field_errors, invalid, json_error

M = TypeVar("M", bound=BaseModel)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# JSON bodies and cursors nest at most this deep: nothing we read goes past 2, and Python's own
# parser fails past ~1,000 with a RecursionError rather than an answer.
MAX_DEPTH = 32
# Postgres text cannot hold NUL, and UTF-8 cannot hold a lone surrogate (JSON's "\ud800" makes one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_DIGITS = re.compile(r"[0-9]{1,6}")
UNSTORABLE = "must not contain NUL (\\u0000) or unpaired surrogates"


def storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


class StorableText:
    """Refuses a path or query parameter that Postgres could not store, before any handler runs:
    one gate for every endpoint rather than a check in each."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            bad = [name for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                   if not (storable(name) and storable(value))]
            if not storable(scope["path"]):
                bad.append(_path_field(scope))
            if bad:
                return await json_error(invalid(dict.fromkeys(bad, UNSTORABLE)))(scope, receive, send)
        await self.app(scope, receive, send)


def _path_field(scope: Scope) -> str:
    """The route parameter holding the bad text, or `path` when no route names it."""
    for route in getattr(scope.get("app"), "routes", ()):
        match, child = route.matches(scope)
        if match is Match.FULL:
            for name, value in child.get("path_params", {}).items():
                if isinstance(value, str) and not storable(value):
                    return str(name)
    return "path"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):  # always to the microsecond, so that times sort as text too
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
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


def parse_object(body: bytes, check_text: bool = True) -> dict[str, Any]:
    data = parse_json(body, "body is not valid JSON (send Content-Type: application/json)", check_text)
    if not isinstance(data, dict):
        raise ApiError("ERR_400", "body must be a JSON object")
    return data


def parse_json(text: str | bytes, unparseable: str, check_text: bool = True) -> Any:
    """A JSON document no deeper than MAX_DEPTH whose every text Postgres can store (unless the
    caller checks the fields it reads itself): ERR_400 (`unparseable`, or too deep) or ERR_422
    naming the field with unstorable text."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ApiError("ERR_400", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # UnicodeDecodeError is one too
        raise ApiError("ERR_400", unparseable) from None
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:  # a loop, not recursion: the document may be as deep as the parser allows
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if check_text and not storable(value):
                raise invalid({path or "body": UNSTORABLE})
            continue
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        if depth >= MAX_DEPTH:
            raise ApiError("ERR_400", f"JSON nested deeper than {MAX_DEPTH} levels")
        for key, item in items:
            name = f"{path}.{key}" if path else str(key)
            if check_text and not storable(name):
                raise invalid({"body": f"a field name {UNSTORABLE}"})
            stack.append((item, name, depth + 1))
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
    # ASCII digits only: str.isdigit() also takes "²" and other scripts' digits, which int() refuses
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
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
        when, ident = parse_json(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), "")
        if not isinstance(when, str) or not isinstance(ident, str):
            raise TypeError(when, ident)
        return datetime.fromisoformat(when.replace("Z", "+00:00")), ident
    except (ValueError, TypeError, ApiError):
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
