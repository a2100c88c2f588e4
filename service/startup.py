"""Starting up: a dependency that does not answer is tried again for a bounded time, then named
in one line (StartupError), never a traceback unless logging at DEBUG."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger("mcode.startup")
T = TypeVar("T")

# A dependency that does not answer at start is tried again, the pause doubling from 0.25 s up to
# 4 s, until MCODE_START_WAIT_S (default 10) have passed; then it is named in one line.
START_WAIT_S = 10.0
FIRST_PAUSE_S, MAX_PAUSE_S = 0.25, 4.0
TRY_TIMEOUT_S = 5.0  # one try's own limit (asyncpg would wait 60 s on a host that never answers)


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


def cause(exc: BaseException) -> BaseException | None:
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
                ) from cause(exc)
            log.debug("%s did not answer (%s); trying again", what, why(exc))
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, MAX_PAUSE_S)
