"""Faults under steady load: clicks answered against clicks stored, repeats, order verdicts, and
what a stalled dependency costs a buyer.

    .venv/bin/python loadtests/faults.py [--rate 1500] [--only NAME ...]

Each scenario runs the service (uvicorn, 2 workers, as deployed) on a PostgreSQL and a Redis of
its own under .local/faults/, sends first visits and repeats (one in five requests repeats a
device of the last few seconds) at --rate requests per second over keep-alive connections,
posts signed orders on answered clicks throughout (retrying a 503 as an order system would),
causes one fault for real, lets everything settle, and counts by click id:
  answered   302s the buyers got;   lost   answered but not in Postgres (by mc_click and count);
  doubled    clicks counted twice (rows beyond requests, or rollups beyond rows);
  repeats stored valid   a device with two valid clicks on a code (every repeat here is seconds apart);
  orders     answers by status, and final verdicts that are not `attributed` (each order is on an
             answered click within the window, so any other verdict is wrong);
  p99 / max  buyers' latency while the fault lasts.
Nothing here asserts a time: it prints the table; loadtests/RESULTS.md keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.auth import sign  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import redis as keys  # noqa: E402
from tests.cluster import LocalCluster  # noqa: E402
from tests.faults import OwnPostgres, OwnRedis, free_port  # noqa: E402

LOCAL = ROOT / ".local" / "faults"
ADMIN = "faults-admin-token-0123456789"
SECRET = "faults-event-secret-0123456789"  # noqa: S105 (a throwaway service's)
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/124.0.0.0 Safari/537.36")
CONNECTIONS = 48
REPEAT_SHARE = 0.2
ORDERS_PER_S = 10
WARMUP_S = 5.0
SETTLE_S = 10.0


@dataclass
class Answer:
    at: float  # monotonic, when sent
    seconds: float
    status: int
    click_id: str | None
    repeat: bool


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)  # device addresses of the last seconds
    orders: dict[str, dict[str, object]] = field(default_factory=dict)  # event id -> body
    order_statuses: Counter[int] = field(default_factory=Counter)
    verdicts: dict[str, str] = field(default_factory=dict)  # event id -> final status (or "pending")
    wrong: dict[str, object] = field(default_factory=dict)  # event id -> the answer, when not attributed
    fault: tuple[float, float] = (0.0, 0.0)
    stop: bool = False
    device_counter: int = 0


class Service:
    """The service as deployed: uvicorn with 2 workers, and a separate writer when asked."""

    def __init__(self, pg: OwnPostgres, redis: OwnRedis | LocalCluster, embedded_writer: bool, local: Path) -> None:
        self.port = free_port()
        self.env = os.environ | {
            "MCODE_ENV": "prod", "MCODE_DATABASE_URL": pg.url, "MCODE_REDIS_URL": redis.url,
            "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_SIGNING_KEYS": "faults-signing-key-0123456789",
            "MCODE_EVENT_SECRETS": SECRET, "MCODE_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "MCODE_TRUSTED_PROXIES": "127.0.0.1/32", "MCODE_COOKIE_SECURE": "0",
            "MCODE_SPOOL_DIR": str(local / "spool"), "MCODE_EMBEDDED_WRITER": "1" if embedded_writer else "0",
            "PYTHONPATH": str(ROOT),
        }
        self.web: subprocess.Popen[bytes] | None = None
        self.writer: subprocess.Popen[bytes] | None = None
        self.log = (local / "service.log").open("ab")

    def start(self) -> None:
        uvicorn = str(Path(sys.executable).with_name("uvicorn"))
        self.web = subprocess.Popen(
            [uvicorn, "service.app:app", "--port", str(self.port), "--workers", "2", "--no-access-log",
             "--no-proxy-headers", "--http", "httptools", "--loop", "uvloop", "--log-level", "warning"],
            env=self.env, cwd=ROOT, stdout=self.log, stderr=self.log)

    def start_writer(self) -> None:
        mcode = str(Path(sys.executable).with_name("mcode"))
        self.writer = subprocess.Popen([mcode, "writer"], env=self.env, cwd=ROOT, stdout=self.log, stderr=self.log)

    def stop(self) -> None:
        for proc in (self.web, self.writer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.web, self.writer):
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=60)
        self.log.close()


async def http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, str]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return status, headers.get("location", "")


async def buyer(run: Run, port: int, code: str, per_connection_rate: float) -> None:
    """One keep-alive connection sending first visits and repeats at its share of the rate."""
    interval = 1.0 / per_connection_rate
    reader = writer = None
    next_at = time.monotonic()
    while not run.stop:
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        repeat = bool(run.recent) and random.random() < REPEAT_SHARE
        if repeat:
            ip = random.choice(run.recent[-500:])
        else:
            run.device_counter += 1
            n = run.device_counter
            ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
        request = (f"GET /e/{code} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n"
                   f"Accept-Language: en-US,en;q=0.9\r\nX-Forwarded-For: {ip}\r\n\r\n").encode()
        started = time.monotonic()
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            status, location = await asyncio.wait_for(http_get(reader, writer, request), 30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            if writer is not None:
                writer.close()
            reader = writer = None
            run.answers.append(Answer(started, time.monotonic() - started, 0, None, repeat))
            continue
        click_id = parse_qs(urlsplit(location).query).get("mc_click", [None])[0] if status == 302 else None
        run.answers.append(Answer(started, time.monotonic() - started, status, click_id, repeat))
        if not repeat:  # repeated only once answered: a repeat sent before its first is a race, not a repeat
            run.recent.append(ip)
            del run.recent[:-2000]
    if writer is not None:
        writer.close()


async def post_order(client: httpx.AsyncClient, run: Run, event_id: str) -> None:
    body = json.dumps(run.orders[event_id]).encode()
    stamp = str(int(time.time()))
    try:
        r = await client.post("/v1/events", content=body, headers={
            "mcode-signature": f"t={stamp},v1={sign(SECRET, stamp, body)}", "content-type": "application/json"})
    except httpx.HTTPError:
        run.order_statuses[0] += 1
        run.verdicts[event_id] = "retry"
        return
    run.order_statuses[r.status_code] += 1
    if r.status_code in (200, 201):
        run.verdicts[event_id] = str(r.json()["status"])
        if run.verdicts[event_id] != "attributed":
            run.wrong[event_id] = r.json()
    elif r.status_code == 503:
        run.verdicts[event_id] = "retry"


async def order_system(run: Run, client: httpx.AsyncClient) -> None:
    """Orders on clicks answered in the last seconds; a 503 is retried a second later, as an order
    system honouring Retry-After would, until it gets an answer."""
    posting: set[asyncio.Future[None]] = set()
    tick = 0
    while not run.stop:
        await asyncio.sleep(1 / ORDERS_PER_S)
        tick += 1
        answered = [a.click_id for a in run.answers[-300:] if a.click_id]
        chosen = []
        if answered:
            event_id = f"e-{uuid.uuid4().hex}"
            run.orders[event_id] = {
                "event_id": event_id, "type": "order", "order_id": f"o-{uuid.uuid4().hex}",
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "click_id": random.choice(answered), "amount": "10.00", "currency": "USD", "category": "toys",
            }
            run.verdicts[event_id] = "sent"
            chosen.append(event_id)
        if tick % ORDERS_PER_S == 0:
            chosen += [e for e, v in run.verdicts.items() if v == "retry"]
        for event_id in chosen:
            run.verdicts[event_id] = "sent"
            task = asyncio.ensure_future(post_order(client, run, event_id))
            posting.add(task)
            task.add_done_callback(posting.discard)
    await asyncio.gather(*posting)


async def make_code(client: httpx.AsyncClient) -> str:
    (await client.put("/v1/sellers/s1", json={"name": "Faults", "status": "active", "verified": True,
                                              "affiliate_enabled": True})).raise_for_status()
    (await client.put("/v1/products/p1", json={
        "seller_id": "s1", "url": "https://www.aliexpress.com/item/1.html", "category": "toys", "status": "listed",
        "stock": 100})).raise_for_status()
    r = await client.post("/v1/codes", json={"seller_id": "s1", "product_id": "p1", "utm_source": "ig",
                                             "utm_medium": "social", "utm_campaign": "ig_202411_faults",
                                             "utm_content": uuid.uuid4().hex[:8]})
    r.raise_for_status()
    return str(r.json()["code"])


Fault = Callable[[OwnPostgres, Any, Service, float], Awaitable[None]]


@dataclass
class Scenario:
    name: str
    fault: Fault
    seconds: float  # how long the fault lasts
    appendonly: bool = False
    embedded_writer: bool = True
    cluster: bool = False  # a local Redis Cluster (3 masters, 3 replicas, AOF) instead of one node


async def stop_postgres(pg: OwnPostgres, redis: OwnRedis, service: Service, seconds: float) -> None:
    await asyncio.to_thread(pg.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(pg.start)


async def kill_redis(pg: OwnPostgres, redis: OwnRedis, service: Service, seconds: float) -> None:
    redis.kill()
    await asyncio.sleep(seconds)
    await asyncio.to_thread(redis.start)


async def pause_redis(pg: OwnPostgres, redis: OwnRedis, service: Service, seconds: float) -> None:
    admin = aioredis.Redis.from_url(redis.url)
    await admin.client_pause(int(seconds * 1000))
    await admin.aclose()
    await asyncio.sleep(seconds)


async def kill_writer(pg: OwnPostgres, redis: OwnRedis, service: Service, seconds: float) -> None:
    assert service.writer is not None
    service.writer.kill()
    service.writer.wait()
    await asyncio.sleep(seconds)
    service.start_writer()


async def kill_master(pg: OwnPostgres, cluster: LocalCluster, service: Service, seconds: float) -> None:
    """SIGKILL a master: its replica takes over (a second of node timeout, then an election); the
    old master comes back after `seconds` and rejoins as a replica."""
    started = time.monotonic()
    victim = cluster.masters()[0]
    followers = await asyncio.to_thread(cluster.kill, victim)
    await asyncio.to_thread(cluster.wait_failover, followers)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    await asyncio.to_thread(cluster.restart, victim)


async def reshard(pg: OwnPostgres, cluster: LocalCluster, service: Service, seconds: float) -> None:
    """Move a third of one master's slots (keys and all) to another with redis-cli while clicks flow."""
    source, target, *_ = cluster.masters()
    await asyncio.to_thread(cluster.reshard, source, target, 2000)


SCENARIOS = [
    Scenario("postgres stopped 30 s", stop_postgres, 30),
    Scenario("redis SIGKILL, restarted after 10 s, no AOF", kill_redis, 10),
    Scenario("redis SIGKILL, AOF everysec", kill_redis, 10, appendonly=True),
    Scenario("redis CLIENT PAUSE 5 s", pause_redis, 5),
    Scenario("redis CLIENT PAUSE 5 s, writer apart", pause_redis, 5, embedded_writer=False),
    Scenario("mcode writer kill -9, restarted after 20 s", kill_writer, 20, embedded_writer=False),
    Scenario("cluster: a master SIGKILL, its replica promoted", kill_master, 10, cluster=True),
    Scenario("cluster: 2000 slots resharded under load", reshard, 0, cluster=True),
]


async def settle(pg: OwnPostgres, answered: int, code: str) -> int:
    """Clicks of `code` in Postgres once they stop growing (or reach what was answered)."""
    conn = await asyncpg.connect(pg.url)
    try:
        last, still = -1, 0
        for _ in range(240):
            n = int(await conn.fetchval("SELECT count(*) FROM clicks WHERE code = $1", code))
            if n >= answered:
                return n
            still = still + 1 if n == last else 0
            if still >= 40:  # 20 s without a new click: what is missing is not coming
                return n
            last = n
            await asyncio.sleep(0.5)
        return last
    finally:
        await conn.close()


async def run_scenario(scenario: Scenario, rate: int, warmup_s: float = WARMUP_S, settle_s: float = SETTLE_S,
                       local: Path = LOCAL) -> dict[str, object]:
    await asyncio.to_thread(local.mkdir, parents=True, exist_ok=True)
    pg = OwnPostgres(local / "pg").start()
    redis: OwnRedis | LocalCluster = (LocalCluster(local / "cluster") if scenario.cluster
                                      else OwnRedis(local / "redis", appendonly=scenario.appendonly)).start()
    # A Redis that has run for hours, as in production: its verdicts stand until a fault puts
    # them in doubt (a fresh one would have every click judged again in Postgres for an hour).
    admin = await keys.client(redis.url)
    shards = keys.Shards("mc:", Settings.model_fields["click_streams"].default, cluster=scenario.cluster)
    for shard in range(shards.count):
        await admin.set(shards.epoch(shard), str(int(time.time() * 1000) - 7_200_000))
    await admin.aclose()
    conn = await asyncpg.connect(pg.url.replace("/mcode", "/postgres"))
    await conn.execute("DROP DATABASE IF EXISTS mcode WITH (FORCE)")
    await conn.close()
    service = Service(pg, redis, scenario.embedded_writer, local)
    run = Run()
    try:
        service.start()
        if not scenario.embedded_writer:
            service.start_writer()
        base = f"http://127.0.0.1:{service.port}"
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"},
                                     timeout=30) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            code = await make_code(client)
            tasks = [asyncio.ensure_future(buyer(run, service.port, code, rate / CONNECTIONS))
                     for _ in range(CONNECTIONS)]
            tasks.append(asyncio.ensure_future(order_system(run, client)))
            await asyncio.sleep(warmup_s)
            started = time.monotonic()
            await scenario.fault(pg, redis, service, scenario.seconds)
            run.fault = (started, time.monotonic())
            await asyncio.sleep(settle_s)
            run.stop = True
            await asyncio.gather(*tasks)
            answered = [a for a in run.answers if a.status == 302]
            stored = await settle(pg, len(answered), code)
            for _ in range(120):  # an order system keeps retrying its 503s
                pending = [e for e, v in run.verdicts.items() if v == "retry"]
                if not pending:
                    break
                await asyncio.gather(*(post_order(client, run, e) for e in pending[:50]))
                await asyncio.sleep(1)
        return await count(scenario, run, pg, code, answered, stored)
    finally:
        service.stop()
        redis.stop()
        pg.stop()


async def count(scenario: Scenario, run: Run, pg: OwnPostgres, code: str, answered: list[Answer],
                stored: int) -> dict[str, object]:
    conn = await asyncpg.connect(pg.url)
    try:
        reasons = {r["click_id"]: r["reason"] for r in await conn.fetch(
            "SELECT click_id, reason FROM clicks WHERE code = $1", code)}
        ids = set(reasons)
        rollups = int(await conn.fetchval("SELECT coalesce(sum(clicks), 0) FROM click_rollups WHERE code = $1", code))
        repeats_valid = int(await conn.fetchval(
            """SELECT coalesce(sum(v - 1), 0) FROM (SELECT count(*) AS v FROM clicks
               WHERE code = $1 AND reason IS NULL GROUP BY device_hash HAVING count(*) > 1) AS twice""", code))
        dups = int(await conn.fetchval("SELECT count(*) FROM clicks WHERE code = $1 AND reason = 'ERR_DUP'", code))
    finally:
        await conn.close()
    missing = {a.click_id for a in answered if a.click_id} - ids
    during = sorted(a.seconds for a in run.answers if run.fault[0] <= a.at <= run.fault[1])
    verdicts = Counter(run.verdicts.values())
    return {
        "scenario": scenario.name, "answered": len(answered),
        "refused": sum(1 for a in run.answers if a.status != 302),
        "lost": max(len(answered) - stored, len(missing)), "doubled": max(0, stored - len(answered), rollups - stored),
        "repeats sent": sum(1 for a in answered if a.repeat), "stored ERR_DUP": dups,
        "repeats stored valid": repeats_valid,
        "first visits stored as a repeat": sum(1 for a in answered if not a.repeat and a.click_id
                                               and reasons.get(a.click_id) is not None),
        "wrong answers": list(run.wrong.values())[:5],
        "orders": dict(sorted(run.order_statuses.items())),
        "wrong verdicts": sum(n for v, n in verdicts.items() if v not in ("attributed", "retry", "sent")),
        "orders unanswered": verdicts.get("retry", 0) + verdicts.get("sent", 0),
        "p99 during fault ms": round(statistics.quantiles(during, n=100)[98] * 1000, 1) if len(during) > 100 else None,
        "max during fault ms": round(during[-1] * 1000, 1) if during else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1500)
    parser.add_argument("--only", nargs="*", help="scenarios whose name contains one of these words")
    args = parser.parse_args()
    LOCAL.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in SCENARIOS if not args.only or any(w in s.name for w in args.only)]
    results = []
    for scenario in chosen:
        print(f"--- {scenario.name}", flush=True)
        result = await run_scenario(scenario, args.rate)
        print(json.dumps(result), flush=True)
        results.append(result)
    print("\n| fault under load | answered | lost | doubled | repeats stored valid | orders (status: count) "
          "| wrong verdicts | p99 / max during the fault |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scenario']} | {r['answered']:,} | {r['lost']} | {r['doubled']} | {r['repeats stored valid']} "
              f"(of {r['repeats sent']} repeats) | {r['orders']} | {r['wrong verdicts']} "
              f"| {r['p99 during fault ms']} / {r['max during fault ms']} ms |")


if __name__ == "__main__":
    asyncio.run(main())
