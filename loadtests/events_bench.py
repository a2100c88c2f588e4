"""Order events per second: signed `order` events, each on a fresh valid click, posted to a real
server (uvicorn, 2 workers) by wrk.

    .venv/bin/python loadtests/events_bench.py [--events 20000] [--connections 32]

Clicks are made first through the redirect (so attribution finds them in Redis, as an order
right after a click would); the orders are signed ahead (a signature holds for 300 s), then
posted by wrk and timed; then the same events are posted again to time idempotent replays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from loadtests.bench import ADMIN, DATABASE_URL, env, free_port, make_code, reset_stores, start, wait_ready  # noqa: E402
from service.auth import sign  # noqa: E402

SECRET = "dev-event-secret-change-me"  # noqa: S105 (the development secret MCODE_ENV=dev accepts)


def signed(body: bytes) -> dict[str, str]:
    t = str(int(time.time()))
    mac = sign(SECRET, t, body)
    return {"mcode-signature": f"t={t},v1={mac}", "content-type": "application/json"}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=30000, help="more than one run can post")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32, help="clients making the clicks first")
    args = parser.parse_args()
    assert env()["MCODE_DATABASE_URL"] == DATABASE_URL
    await reset_stores()
    port = free_port()
    server = start("service.app:app", port)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"{base}/healthz")
        code = await make_code(base)
        limits = httpx.Limits(max_connections=args.concurrency)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            sem = asyncio.Semaphore(args.concurrency)

            async def click(i: int) -> str:
                async with sem:
                    r = await client.get(f"/e/{code}", headers={
                        "user-agent": f"Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0 device/{i}"})
                    return parse_qs(urlsplit(r.headers["location"]).query)["mc_click"][0]

            click_ids = await asyncio.gather(*(click(i) for i in range(args.events)))
            run = uuid.uuid4().hex[:8]
            bodies = [json.dumps({
                "event_id": f"{run}-{i}", "type": "order", "order_id": f"{run}-o{i}", "click_id": cid,
                "occurred_at": datetime.now(UTC).isoformat(), "amount": "19.99", "currency": "USD",
                "category": "toys"}).encode() for i, cid in enumerate(click_ids)]

            events = HERE / ".events.tsv"
            events.write_text("".join(f"{signed(b)['mcode-signature']}\t{b.decode()}\n" for b in bodies))
            threads = 2
            for label in ("first posts", "replays"):
                command = ["wrk", "--latency", f"-t{threads}", f"-c{args.connections}", f"-d{args.duration}s",
                           "-s", str(HERE / "events.lua"), base, "--", str(events), str(threads)]
                done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=True)
                out = done.stdout
                rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
                sent = re.search(r"(\d+) requests in", out)
                bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
                print(f"{label:<12} {float(rps.group(1)) if rps else 0:8,.0f} events/s "
                      f"({sent.group(1) if sent else '?'} posted of {len(bodies)} signed), "
                      f"p99 {p99.group(1) if p99 else '?'}, non-2xx answers: {bad.group(1) if bad else 0}")
            events.unlink()
            r = await client.get("/v1/reports/traffic", params={"seller_id": "bench"},
                                 headers={"Authorization": f"Bearer {ADMIN}"})
            print(f"attributed orders in the report: {r.json()['rows'][0]['orders']}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    os.chdir(HERE.parent)
    asyncio.run(main())
