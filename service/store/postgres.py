"""The Postgres pool and the numbered plain-SQL migrations."""

from __future__ import annotations

import logging
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.startup import StartupError, cause, retry_at_start, where, why

log = logging.getLogger("mcode.postgres")

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
            raise StartupError(f"{what} refused the connection: {why(exc)}") from cause(exc)

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
                from cause(exc)
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
