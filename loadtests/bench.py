"""The redirect benchmark: the service and bare Starlette, alternated in one run, driven by wrk.

    scripts/dev.sh bench [--duration 10] [--rounds 2] [--connections 64] [--writer-clicks 200000]
                         [--shape first|returning] [--redis-conf deploy/redis.conf [--appendfsync always]]

--shape first (the default) sends every request as a first-time buyer: no cookie, an address of
its own in X-Forwarded-For (the load generator is a trusted proxy), a desktop Chrome; returning
sends a distinct mc_did cookie per request with a mix of browser UAs (the shape before 2026-11-27).
--redis-conf starts a Redis of the benchmark's own with that file (under .local/bench-redis), so
persistence settings are measured as deployed; otherwise the machine's Redis (DB 14) is used.

Prints, per round and overall: req/s, p50 and p99 for both, the ratio service/bare, clicks
answered vs clicks in Postgres (lost must be 0), the click-to-Postgres lag, and a separate
writer benchmark in clicks/s. Ratios, not absolute numbers, are what compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PG_ROOT = os.environ.get("MCODE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB = os.environ.get("MCODE_BENCH_DB", "mcode_bench")
DATABASE_URL = f"{PG_ROOT}/{DB}"
REDIS_URL = "redis://127.0.0.1:6379/14"  # replaced by the benchmark's own Redis with --redis-conf
TRUSTED = "127.0.0.1/32"  # the load generator, as a proxy in front of the service would be
PREFIX = "bench:"
ADMIN = "bench-admin-token-0123456789"
UVICORN_FLAGS = ["--workers", "2", "--host", "127.0.0.1", "--no-access-log", "--no-proxy-headers",
                 "--no-server-header", "--http", "httptools", "--loop", "uvloop", "--log-level", "warning"]


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(redis_url: str | None = None) -> dict[str, str]:
    return os.environ | {
        "MCODE_ENV": "dev", "MCODE_DATABASE_URL": DATABASE_URL, "MCODE_REDIS_URL": redis_url or REDIS_URL,
        "MCODE_REDIS_PREFIX": PREFIX, "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_COOKIE_SECURE": "0",
        "MCODE_SPOOL_DIR": "/tmp/mcode-bench-spool", "PYTHONPATH": str(ROOT), "MCODE_TRUSTED_PROXIES": TRUSTED,
    }


def start(app: str, port: int, redis_url: str | None = None) -> subprocess.Popen[bytes]:
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    return subprocess.Popen([uvicorn, app, "--port", str(port), *UVICORN_FLAGS], env=env(redis_url), cwd=ROOT)


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise SystemExit(f"cannot read wrk's latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


SCRIPTS = {"first": "first_visit.lua", "returning": "clicks.lua"}


def wrk(url: str, seconds: int, connections: int, run_id: str, shape: str = "first") -> WrkResult:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(HERE / SCRIPTS[shape]), url,
         "--", run_id],
        capture_output=True, text=True, check=True,
    ).stdout
    if "requests in" not in out:
        raise SystemExit(f"wrk gave no result:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    return WrkResult(requests, rps, p50, p99, errors)


async def reset_stores() -> None:
    conn = await asyncpg.connect(f"{PG_ROOT}/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    await conn.close()
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings
    from service.store import redis as keys

    redis = aioredis.Redis.from_url(REDIS_URL)
    await redis.flushdb()
    # As a Redis that has run for hours: an epoch older than a dedup window, so its verdicts stand
    # (a fresh one has the writers judge every click again in Postgres for an hour).
    shards = keys.Shards(PREFIX, Settings.model_fields["click_streams"].default)
    for shard in range(shards.count):
        await redis.set(shards.epoch(shard), str(int(time.time() * 1000) - 7_200_000))
    await redis.aclose()
    shutil.rmtree("/tmp/mcode-bench-spool", ignore_errors=True)


async def make_code(base: str, transport: httpx.AsyncBaseTransport | None = None, content: str = "load") -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, transport=transport) as c:
        (await c.put("/v1/sellers/bench", json={"name": "Bench", "status": "active", "verified": True,
                                                "affiliate_enabled": True})).raise_for_status()
        (await c.put("/v1/products/bench-p", json={
            "seller_id": "bench", "url": "https://www.aliexpress.com/item/1.html?spm=x#top", "category": "toys",
            "status": "listed", "stock": 100})).raise_for_status()
        r = await c.post("/v1/codes", json={"seller_id": "bench", "product_id": "bench-p", "utm_source": "ig",
                                            "utm_medium": "social", "utm_campaign": "ig_202411_bench",
                                            "utm_content": content})
        r.raise_for_status()
        return str(r.json()["code"])


async def stored(code: str, redis_url: str | None = None) -> tuple[int, int, float, float]:
    """(clicks stored, valid among them, lag p50 ms, lag p99 ms) once the writers caught up."""
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings
    from service.store import redis as keys

    redis = await keys.client(redis_url or REDIS_URL)
    shards = keys.Shards(PREFIX, Settings.model_fields["click_streams"].default)
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        for _ in range(600):
            if await keys.backlog(redis, shards) == 0:
                break
            await asyncio.sleep(0.1)
        row = await conn.fetchrow(
            """
            SELECT count(*) AS n, count(*) FILTER (WHERE reason IS NULL) AS valid,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - clicked_at)) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - clicked_at)) AS p99
            FROM clicks WHERE code = $1
            """,
            code,
        )
        return row["n"], row["valid"], (row["p50"] or 0) * 1000, (row["p99"] or 0) * 1000
    finally:
        await conn.close()
        await redis.aclose()


async def writer_bench(n: int, in_doubt: bool = False) -> float:
    """Clicks/s of one writer draining n clicks already in the streams: as on a Redis that has
    run for hours, or (in_doubt) within a doubt span, every click's repeats judged in Postgres."""
    sys.path.insert(0, str(ROOT))
    from service.clicks import Click, ClickLog, new_click_id, now_ms
    from service.devices import device_hash
    from service.spool import Spool
    from service.store import postgres, resp
    from service.store import redis as keys
    from service.writer import Writer

    prefix = f"wbench{uuid.uuid4().hex[:6]}:"
    await postgres.migrate(DATABASE_URL)
    redis = aioredis.Redis.from_url(REDIS_URL)
    shards = keys.Shards(prefix, 16)
    if not in_doubt:  # an epoch two hours old and no doubt span: Redis's verdicts stand
        for shard in range(shards.count):
            await redis.set(shards.epoch(shard), str(int(time.time() * 1000) - 7_200_000))
    pool = await postgres.create_pool(DATABASE_URL, max_size=2)
    log = ClickLog(resp.Redis(REDIS_URL), shards, 3600, 1800, Spool("/tmp/mcode-bench-spool"))
    at = now_ms()
    futures = []
    # an audience as varied as a busy seller's: 50 codes, a thousand networks, real browsers' agents
    rng = random.Random(5)
    agents = (ROOT / "tests" / "data" / "browser_user_agents.txt").read_text().splitlines()
    networks = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0" for _ in range(1000)]
    referers = ["", "https://www.instagram.com/", "https://t.co/x", "https://vk.com/feed"]
    for i in range(n):
        click = Click(new_click_id(at), at, f"WRITERBENCH{i % 50}", "bench", "bench-p", "",
                      device_hash(f"{prefix}{i}"), rng.choice(networks), rng.choice(agents), rng.choice(referers))
        futures.append(log.log(click, dedup=False))
    await asyncio.gather(*futures)
    writer = Writer(pool, redis, shards, None, 3600, name="bench")
    await writer.step()  # partitions, group, first batch: not timed
    started = time.perf_counter()
    total = 0
    while True:
        done = await writer.step()
        total += done
        if done == 0:
            break
    elapsed = time.perf_counter() - started
    await pool.close()
    await redis.aclose()
    await log.redis.close()
    return total / elapsed


def own_redis(conf: str, appendfsync: str | None) -> tuple[subprocess.Popen[bytes], str]:
    """A Redis started from `conf` on a free port, with a fresh data folder under .local/."""
    folder = ROOT / ".local" / "bench-redis"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = free_port()
    extra = ["--appendfsync", appendfsync] if appendfsync else []
    proc = subprocess.Popen(["redis-server", str(Path(conf).resolve()), "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(folder), "--daemonize", "no", "--logfile", str(folder / "redis.log"),
                             *extra])
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server {conf} did not come up; see {folder / 'redis.log'}")


async def main() -> None:
    global REDIS_URL
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--writer-clicks", type=int, default=200_000)
    parser.add_argument("--shape", choices=sorted(SCRIPTS), default="first")
    parser.add_argument("--redis-conf")
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"])
    parser.add_argument("--writer-only", action="store_true", help="only the writer benchmark")
    parser.add_argument("--cluster", action="store_true",
                        help="also the service on a local Redis Cluster (3 masters, 3 replicas, AOF everysec)")
    args = parser.parse_args()
    if args.writer_only:
        for _ in range(args.rounds):
            rate = await writer_bench(args.writer_clicks)
            print(f"writer: {rate:,.0f} clicks/s ({args.writer_clicks} clicks, one writer)", flush=True)
            rate = await writer_bench(args.writer_clicks, in_doubt=True)
            print(f"writer, every click judged in Postgres (a doubt span): {rate:,.0f} clicks/s", flush=True)
        return
    redis_proc = None
    if args.redis_conf:
        redis_proc, REDIS_URL = own_redis(args.redis_conf, args.appendfsync)
        print(f"redis: {args.redis_conf} (appendfsync {args.appendfsync or 'as the file says'}) at {REDIS_URL}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk")

    await reset_stores()
    cluster = None
    if args.cluster:
        sys.path.insert(0, str(ROOT))
        from tests.cluster import LocalCluster

        cluster = LocalCluster(ROOT / ".local" / "bench-cluster").start()
        print(f"redis cluster: {cluster.urls}")
    bare_port, service_port, cluster_port = free_port(), free_port(), free_port()
    bare = start("loadtests.bare:app", bare_port)
    service = start("service.app:app", service_port)
    on_cluster = start("service.app:app", cluster_port, cluster.urls) if cluster else None
    try:
        await wait_ready(f"http://127.0.0.1:{bare_port}/e/x")
        await wait_ready(f"http://127.0.0.1:{service_port}/healthz")
        code = await make_code(f"http://127.0.0.1:{service_port}")
        cluster_code = ""
        if on_cluster is not None:
            await wait_ready(f"http://127.0.0.1:{cluster_port}/healthz")
            cluster_code = await make_code(f"http://127.0.0.1:{cluster_port}", content="cluster")
        print(f"code {code}; {args.connections} connections, {args.duration}s per run, 2 uvicorn workers each, "
              f"{args.shape} visits\n")
        print(f"{'round':<6}{'app':<9}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ratio':>8}")
        bare_runs, service_runs, cluster_runs = [], [], []
        for rnd in range(1, args.rounds + 1):
            b = wrk(f"http://127.0.0.1:{bare_port}/e/{code}", args.duration, args.connections, f"{2 * rnd}", args.shape)
            s = wrk(f"http://127.0.0.1:{service_port}/e/{code}", args.duration, args.connections, f"{2 * rnd + 1}",
                    args.shape)
            bare_runs.append(b)
            service_runs.append(s)
            print(f"{rnd:<6}{'bare':<9}{b.rps:>10.0f}{b.p50_ms:>9.2f}{b.p99_ms:>9.2f}{b.errors:>8}")
            print(f"{'':<6}{'service':<9}{s.rps:>10.0f}{s.p50_ms:>9.2f}{s.p99_ms:>9.2f}{s.errors:>8}"
                  f"{s.rps / b.rps:>8.2f}")
            if on_cluster is not None:
                c = wrk(f"http://127.0.0.1:{cluster_port}/e/{cluster_code}", args.duration, args.connections,
                        f"{2 * rnd + 101}", args.shape)
                cluster_runs.append(c)
                print(f"{'':<6}{'cluster':<9}{c.rps:>10.0f}{c.p50_ms:>9.2f}{c.p99_ms:>9.2f}{c.errors:>8}"
                      f"{c.rps / b.rps:>8.2f}  ({c.rps / s.rps:.2f} of one node)")
        bare_rps = sum(r.rps for r in bare_runs) / len(bare_runs)
        service_rps = sum(r.rps for r in service_runs) / len(service_runs)
        sent = sum(r.requests for r in service_runs)
        n, valid, lag50, lag99 = await stored(code)
        print(f"\nratio service/bare (mean of rounds): {service_rps / bare_rps:.2f}")
        print(f"service p99 worst round: {max(r.p99_ms for r in service_runs):.2f} ms")
        print(f"clicks answered (wrk count): {sent}; in Postgres: {n} (valid {valid}); "
              f"lost: {max(0, sent - n)}")
        print(f"click->Postgres lag: p50 {lag50:.0f} ms, p99 {lag99:.0f} ms")
        if cluster is not None:
            cluster_rps = sum(r.rps for r in cluster_runs) / len(cluster_runs)
            sent = sum(r.requests for r in cluster_runs)
            n, valid, lag50, lag99 = await stored(cluster_code, cluster.urls)
            worst = max(r.p99_ms for r in cluster_runs)
            print(f"cluster/one node (mean of rounds): {cluster_rps / service_rps:.2f}; cluster/bare "
                  f"{cluster_rps / bare_rps:.2f}; cluster p99 worst round: {worst:.2f} ms")
            print(f"cluster clicks answered: {sent}; in Postgres: {n} (valid {valid}); lost: {max(0, sent - n)}; "
                  f"lag p50 {lag50:.0f} ms, p99 {lag99:.0f} ms")
    finally:
        procs = [p for p in (bare, service, on_cluster) if p is not None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        if cluster is not None:
            cluster.stop()
    try:
        rate = await writer_bench(args.writer_clicks)
        print(f"writer: {rate:,.0f} clicks/s ({args.writer_clicks} clicks, one writer)")
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
