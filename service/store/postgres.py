"""The Postgres pool and the numbered plain-SQL migrations."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger("mcode.postgres")
T = TypeVar("T")

# A dependency that does not answer at start is tried again, the pause doubling from 0.25 s up to
# 4 s, until MCODE_START_WAIT_S (default 10) have passed; then it is named in one line.
START_WAIT_S = 10.0
FIRST_PAUSE_S, MAX_PAUSE_S = 0.25, 4.0
TRY_TIMEOUT_S = 5.0  # one try's own limit (asyncpg would wait 60 s on a host that never answers)

# Any fixed number will do: it only has to be the same in every process that migrates.
MIGRATION_LOCK = 0x6D636F6465


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migrations/NNNN_name.sql, in order."""
    found = []
    for entry in resources.files("service.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class StartupError(Exception):
    """What stops a process at start, in one line naming the dependency or setting (never a traceback)."""


def start_wait_s() -> float:
    raw = os.environ.get("MCODE_START_WAIT_S", "").strip()
    try:
        wait = float(raw) if raw else START_WAIT_S
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= 3600:
        raise StartupError(f"MCODE_START_WAIT_S: {raw!r} is not a number of seconds from 0 to 3600")
    return wait


def where(url: str, default_port: int) -> str:
    """host:port of a database or Redis URL, for messages (never its credentials)."""
    parts = urlsplit(url.strip())
    hosts = parts.netloc.rpartition("@")[2] or "localhost"
    return hosts if ":" in hosts or "," in hosts or hosts.startswith("[") else f"{hosts}:{default_port}"


def why(exc: BaseException) -> str:
    """An error's cause in a few words: "Connection refused", "timed out", the server's message."""
    seen: BaseException | None = None if isinstance(exc, StartupError | asyncpg.PostgresError) else exc
    while seen is not None:  # a client library's own error often wraps the socket's
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
        if isinstance(seen, TimeoutError):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    return " ".join(str(exc).split()) or type(exc).__name__


def _cause(exc: BaseException) -> BaseException | None:
    """What a StartupError is raised from: the whole story when logging at DEBUG, else nothing
    (uvicorn prints a failed start's traceback itself: the shorter, the clearer)."""
    return exc if log.isEnabledFor(logging.DEBUG) else None


async def retry_at_start(
    what: str, attempt: Callable[[float], Awaitable[T]], transient: tuple[type[BaseException], ...],
    wait_s: float | None = None,
) -> T:
    """`attempt(limit_s)` until it answers; a transient failure is tried again with a doubling pause
    until `wait_s` (MCODE_START_WAIT_S) have passed, then StartupError names `what` and the cause."""
    wait = start_wait_s() if wait_s is None else wait_s
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline, pause, tries = started + wait, FIRST_PAUSE_S, 0
    while True:
        tries += 1
        try:
            return await attempt(max(min(TRY_TIMEOUT_S, deadline - loop.time()), 0.5))
        except transient as exc:
            left = deadline - loop.time()
            if left <= 0:
                raise StartupError(
                    f"{what} did not answer after {tries} {'try' if tries == 1 else 'tries'} over "
                    f"{loop.time() - started:.0f} s: {why(exc)}"
                ) from _cause(exc)
            log.debug("%s did not answer (%s); trying again", what, why(exc))
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, MAX_PAUSE_S)


async def connect_at_start(url: str, wait_s: float | None = None) -> asyncpg.Connection:
    """The first connection a process makes, retried while the server does not answer; a refusal
    (bad password, unknown role, a malformed URL) is a StartupError at once. A missing database is
    asyncpg's InvalidCatalogNameError, for the caller to create it."""
    what = f"PostgreSQL at {where(url, 5432)}"

    async def attempt(limit_s: float) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(url, timeout=limit_s)
        except (asyncpg.InvalidCatalogNameError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError):
            raise  # missing database: created by the caller; starting up or full: tried again
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StartupError(f"{what} refused the connection: {why(exc)}") from _cause(exc)

    return await retry_at_start(
        what, attempt, (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
                        asyncpg.ConnectionDoesNotExistError), wait_s)


async def create_database_if_missing(url: str) -> None:
    """Connecting to a database that does not exist yet creates it, via the `postgres` database."""
    try:
        conn = await connect_at_start(url)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        try:
            admin = await connect_at_start(urlunsplit(parts._replace(path="/postgres")))
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
                log.info("created database %s", name)
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another process won the race (Postgres reports it either way)
            finally:
                await admin.close()
        except (asyncpg.PostgresError, StartupError) as exc:
            raise StartupError(f"database {name} does not exist and could not be created: {why(exc)}") \
                from _cause(exc)
    else:
        await conn.close()


async def migrate(url: str) -> list[str]:
    """Apply every migration not yet applied; returns the names applied now."""
    await create_database_if_missing(url)
    conn = await asyncpg.connect(url)
    applied_now: list[str] = []
    try:
        # Two processes starting at once: the second waits here, then finds nothing to do.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied_now.append(name)
            log.info("applied migration %s", name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await conn.close()
    return applied_now


async def create_pool(url: str, min_size: int = 0, max_size: int = 10) -> asyncpg.Pool:
    # No connection floor by default: asyncpg keeps a floor by reconnecting in the background and
    # logs a traceback for every failed try, so an outage would fill the log. Idle connections
    # are still kept for reuse.
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=30)
