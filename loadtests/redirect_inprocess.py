"""CPU cost of the redirect itself, without HTTP parsing or sockets: the app is called as ASGI
in-process by 64 concurrent tasks (so click-log batches form as under load), each request a
distinct device. Prints this process's CPU and Redis's CPU per request; steadier than wrk on a
noisy machine, so it is the figure to compare code changes by.

    .venv/bin/python loadtests/redirect_inprocess.py [--requests 64000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.bench import ADMIN, DATABASE_URL, PREFIX, REDIS_URL, make_code

os.environ.update({
    "MCODE_ENV": "dev", "MCODE_DATABASE_URL": DATABASE_URL, "MCODE_REDIS_URL": REDIS_URL,
    "MCODE_REDIS_PREFIX": PREFIX, "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_COOKIE_SECURE": "0",
    "MCODE_SPOOL_DIR": "/tmp/mcode-bench-spool", "MCODE_EMBEDDED_WRITER": "0",
})

from asgi_lifespan import LifespanManager

from service.app import create_app
from service.settings import Settings

UA = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
TASKS = 64


def redis_cpu() -> float:
    info: Any = redis.Redis.from_url(REDIS_URL).info("cpu")
    return float(info["used_cpu_sys"] + info["used_cpu_user"])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64_000)
    parser.add_argument("--profile", action="store_true", help="print the top functions by own time (cProfile)")
    args = parser.parse_args()
    app = create_app(Settings())
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        code = await make_code("http://bench", transport=transport)
        statuses: dict[int, int] = {}
        run = uuid.uuid4().hex[:8]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        async def buyer(task: int, count: int, phase: str) -> None:
            for i in range(count):
                device = f"{phase}{run}{task:03d}{i:010d}"[:22]
                scope = {
                    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                    "scheme": "http", "path": f"/e/{code}", "raw_path": f"/e/{code}".encode(), "query_string": b"",
                    "root_path": "", "client": ("203.0.113.9", 5555), "server": ("127.0.0.1", 8000), "state": {},
                    "headers": [(b"host", b"mc.example"), (b"user-agent", UA), (b"accept-language", b"en-US,en;q=0.9"),
                                (b"cookie", f"mc_did={device}".encode())],
                }
                await app(scope, receive, send)

        await asyncio.gather(*(buyer(t, 200, "w") for t in range(TASKS)))  # warm the caches
        per_task = args.requests // TASKS
        done = per_task * TASKS
        profile = cProfile.Profile() if args.profile else None
        redis_before, cpu_before, wall_before = redis_cpu(), time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        await asyncio.gather(*(buyer(t, per_task, "m") for t in range(TASKS)))
        if profile:
            profile.disable()
        cpu, wall, redis_used = time.process_time() - cpu_before, time.perf_counter() - wall_before, \
            redis_cpu() - redis_before
        print(f"{done} redirects in-process: {1e6 * cpu / done:.1f} us CPU each in this process, "
              f"{1e6 * redis_used / done:.1f} us in Redis; wall {1e6 * wall / done:.1f} us; statuses {statuses}")
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    uvloop.run(main())
