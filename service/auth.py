"""Who is calling: admin tokens, seller keys, and order-system signatures."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

from service.errors import ApiError
from service.store import catalog as sql

KEY_PREFIX = "sk_"
SIGNATURE_TOLERANCE_S = 300


@dataclass(frozen=True)
class Principal:
    seller_id: str | None  # None for an admin

    @property
    def is_admin(self) -> bool:
        return self.seller_id is None

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError("ERR_403", "this needs an admin token")

    def require_seller(self, seller_id: str) -> None:
        if not self.is_admin and self.seller_id != seller_id:
            raise ApiError("ERR_403", "this key belongs to another seller")


def new_seller_key() -> tuple[str, bytes]:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError("ERR_401", "send Authorization: Bearer <admin token or seller key>")
    return token


async def authenticate(request: Request, admin_tokens: Sequence[str], pool: asyncpg.Pool) -> Principal:
    token = _bearer(request)
    # Compare against every token so the time taken does not say which one nearly matched.
    is_admin = False
    for admin in admin_tokens:
        is_admin |= hmac.compare_digest(token.encode(), admin.encode())
    if is_admin:
        return Principal(None)
    if token.startswith(KEY_PREFIX) and len(token) < 128:
        async with pool.acquire() as conn:
            seller_id = await sql.seller_of_key(conn, hash_key(token))
        if seller_id is not None:
            return Principal(seller_id)
    raise ApiError("ERR_401", "unknown credentials")


def sign(secret: str, t: str, body: bytes) -> str:
    """The v1 signature of an event body at unix time t: hex HMAC-SHA256(secret, "<t>.<body>")."""
    return hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    header: str | None, body: bytes, event_secrets: Sequence[str], now: float
) -> None:
    """Raise ERR_401 unless `t=<unix>,v1=<hex>` signs "<t>.<body>" with one of the secrets."""
    if not header:
        raise ApiError("ERR_401", "missing Mcode-Signature header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        raw_t = parts["t"][0]
        if not raw_t.isdigit() or len(raw_t) > 12:
            raise ValueError(raw_t)
        timestamp = int(raw_t)
    except (KeyError, ValueError):
        raise ApiError("ERR_401", "Mcode-Signature needs t=<unix seconds>") from None
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_S:
        raise ApiError("ERR_401", "signature timestamp is more than 300 s from the server's clock")
    expected = [sign(s, raw_t, body) for s in event_secrets]
    ok = False
    for candidate in parts.get("v1", []):
        for digest in expected:
            ok |= hmac.compare_digest(candidate.lower().encode(), digest.encode())
    if not ok:
        raise ApiError("ERR_401", "signature does not match")
