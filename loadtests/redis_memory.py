"""Redis memory per click, measured: N clicks of first-time buyers logged through the click log
(ClickLog, as the redirect does it) into a Redis of our own, then INFO memory read back:
  - dedup marks and attribution records (what Redis holds for an hour and 40 minutes),
  - the click streams (what it holds while clicks wait for a writer: the backlog).

    .venv/bin/python loadtests/redis_memory.py [--clicks 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.clicks import Click, ClickLog, now_ms  # noqa: E402
from service.devices import device_hash  # noqa: E402
from service.spool import Spool  # noqa: E402
from service.store import redis as keys  # noqa: E402
from service.store import resp  # noqa: E402
from tests.faults import OwnRedis  # noqa: E402

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


async def used(redis: aioredis.Redis) -> int:
    await redis.execute_command("MEMORY", "PURGE")
    return int((await redis.info("memory"))["used_memory"])


async def measure(clicks: int) -> None:
    folder = ROOT / ".local" / "redis-memory"
    server = OwnRedis(folder).start()
    admin = aioredis.Redis.from_url(server.url)
    shards = keys.Shards("mc:", 16)
    log = ClickLog(resp.Redis(server.url), shards, 3600, 1800, Spool(str(folder / "spool")))
    try:
        await log.start()
        empty = await used(admin)
        codes = [f"Code{n:010d}" for n in range(1000)]
        started = time.perf_counter()
        at = now_ms() - clicks // 100  # 100 clicks a millisecond: the records fill realistic seconds
        pending = []
        for n in range(clicks):
            code = codes[n % len(codes)]
            device = device_hash(f"{uuid.uuid4().hex}")
            moment = at + n // 100
            click = Click(log.new_click_id(moment, code, device), moment, code, "seller-1", "product-1", "",
                          device, "203.0.113.0", UA, "https://www.instagram.com/")
            pending.append(log.log(click, dedup=True))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        logged = await used(admin)
        for stream in shards.streams:  # as if every writer had caught up
            await admin.delete(stream)
        drained = await used(admin)
        per_million = 1_000_000 / clicks
        print(f"{clicks:,} clicks logged in {time.perf_counter() - started:.1f} s "
              f"(1,000 codes, every click a new device, 100 clicks a millisecond)")
        print(f"dedup marks + attribution records: {(drained - empty) * per_million / 2**20:,.0f} MiB per million "
              f"clicks ({(drained - empty) / clicks:.0f} bytes a click)")
        print(f"click streams (backlog not yet written): {(logged - drained) * per_million / 2**20:,.0f} MiB per "
              f"million clicks waiting ({(logged - drained) / clicks:.0f} bytes a click)")
    finally:
        await log.redis.close()
        await admin.aclose()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=1_000_000)
    args = parser.parse_args()
    asyncio.run(measure(args.clicks))


if __name__ == "__main__":
    main()
