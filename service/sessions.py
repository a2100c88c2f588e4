"""Console sessions: a signed cookie naming a session kept in Redis, and the CSRF tokens bound to it.

The cookie holds a random session id and its expiry, signed with a key derived from the first
MCODE_SIGNING_KEYS; Redis holds whom the session is for and the hash of the credential it was
opened with (never the key itself), so sign-out ends it everywhere and every request can check
that the credential still exists.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

from service import auth
from service.context import Context
from service.errors import ApiError
from service.store import catalog as sql

COOKIE = "mc_console"
# Set by the sign-in form; its token ties the form's post to the browser that loaded it.
SIGN_IN_COOKIE = "mc_console_signin"
COOKIE_PATH = "/console"
LIFETIME_S = 12 * 3600
SIGN_IN_LIFETIME_S = 3600
# {prefix}console:session:{id} -> whom the session is for; expires with the cookie.
SESSION_KEY = "console:session:"
# {prefix}console:bulk:{session id}:{id} -> a bulk upload's result CSV, for its download link.
BULK_KEY = "console:bulk:"
BULK_LIFETIME_S = 3600


@dataclass(frozen=True)
class Session:
    sid: str
    principal: auth.Principal

    def csrf(self, ctx: Context) -> str:
        return _mac(ctx, f"csrf:{self.sid}")


@functools.lru_cache(maxsize=8)
def _derived(signing_key: str) -> bytes:
    # A key of its own: a cookie's MAC can never pass for a marketing code's, nor the other way.
    return hmac.new(signing_key.encode(), b"mcode console session v1", hashlib.sha256).digest()


def _mac(ctx: Context, text: str) -> str:
    digest = hmac.new(_derived(ctx.settings.signing_keys[0]), text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _credential_hash(credential: str) -> str:
    return auth.hash_key(credential).hex()


def signed(ctx: Context, sid: str, expires: int) -> str:
    return f"{sid}.{expires}.{_mac(ctx, f'session:{sid}.{expires}')}"


def _key(ctx: Context, sid: str) -> str:
    return f"{ctx.settings.redis_prefix}{SESSION_KEY}{sid}"


async def sign_in(ctx: Context, credential: str) -> tuple[auth.Principal, str] | None:
    """A new session for an admin token or a seller key, as (principal, cookie value); None when
    the credential is unknown."""
    credential = credential.strip()
    # the API's own check, so the console knows exactly the credentials the API knows
    bearer = Request({"type": "http", "headers": [(b"authorization", f"Bearer {credential}".encode())]})
    try:
        who = await auth.authenticate(bearer, ctx.settings.admin_tokens, ctx.pool)
    except ApiError:
        return None
    sid = secrets.token_urlsafe(24)
    expires = int(time.time()) + LIFETIME_S
    record = {"seller_id": who.seller_id, "credential": _credential_hash(credential)}
    await ctx.redis.set(_key(ctx, sid), json.dumps(record), ex=LIFETIME_S)
    return who, signed(ctx, sid, expires)


async def read(ctx: Context, cookie: str | None) -> Session | None:
    """The live session a cookie names, or None: unsigned, tampered, expired, signed out, or its
    credential gone (a seller key deleted, an admin token taken out of MCODE_ADMIN_TOKENS)."""
    if not cookie or len(cookie) > 200:
        return None
    sid, _, rest = cookie.partition(".")
    raw_expires, _, _ = rest.partition(".")
    if not raw_expires.isascii() or not raw_expires.isdigit():
        return None
    if not hmac.compare_digest(cookie.encode(), signed(ctx, sid, int(raw_expires)).encode()):
        return None
    if int(raw_expires) <= time.time():
        return None
    stored = await ctx.redis.get(_key(ctx, sid))
    if stored is None:
        return None
    record = json.loads(stored)
    seller_id, credential = record["seller_id"], record["credential"]
    if seller_id is None:
        known = False
        for token in ctx.settings.admin_tokens:
            known |= hmac.compare_digest(_credential_hash(token), credential)
        if not known:
            return None
    else:
        async with ctx.pool.acquire() as conn:
            if await sql.seller_of_key(conn, bytes.fromhex(credential)) != seller_id:
                return None
    return Session(sid, auth.Principal(seller_id))


async def sign_out(ctx: Context, session: Session) -> None:
    await ctx.redis.delete(_key(ctx, session.sid))


def sign_in_token(ctx: Context, nonce: str) -> str:
    return _mac(ctx, f"sign-in:{nonce}")


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def bulk_key(ctx: Context, session: Session, upload_id: str) -> str:
    return f"{ctx.settings.redis_prefix}{BULK_KEY}{session.sid}:{upload_id}"
