"""Metrics: the redirect's batched counts, and counts summed across worker processes."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from service import metrics
from tests.conftest import ADMIN, DATABASE_URL, REDIS_URL, SECRET, SIGNING, Maker
from tests.test_redirect import BUYER, IPHONE


def value(text: str, sample: str) -> float:
    for line in text.splitlines():
        name, _, number = line.rpartition(" ")
        if name == sample:
            return float(number)
    return 0.0


def files_now() -> str:
    """What a scrape of any worker would read from the shared files, without flushing ours."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry).decode()


H = "mcode_redirect_duration_seconds"


async def test_tally_reaches_the_files_as_observe_would() -> None:
    metrics.REDIRECTS.flush()
    before = files_now()
    for seconds in (0.0004, 0.0005, 0.0009, 0.004, 2.0):
        metrics.REDIRECTS.add("valid", seconds)
    metrics.REDIRECTS.add("ERR_BOT", 0.0001)
    assert files_now() == before  # nothing written per click
    await asyncio.sleep(metrics.FLUSH_S + 0.3)  # the timer flushes without a scrape
    after = files_now()

    def grew(sample: str) -> float:
        return value(after, sample) - value(before, sample)

    assert grew('mcode_clicks_total{reason="valid"}') == 5
    assert grew('mcode_clicks_total{reason="ERR_BOT"}') == 1
    # Buckets are cumulative in the exposition; 0.0005 falls in le=0.0005 as observe() puts it.
    assert grew(f'{H}_bucket{{le="0.0005"}}') == 3
    assert grew(f'{H}_bucket{{le="0.001"}}') == 4
    assert grew(f'{H}_bucket{{le="0.005"}}') == 5
    assert grew(f'{H}_bucket{{le="1.0"}}') == 5
    assert grew(f'{H}_bucket{{le="+Inf"}}') == 6
    assert grew(f"{H}_count") == 6
    assert abs(grew(f"{H}_sum") - 2.0059) < 1e-9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, log: Path) -> subprocess.Popen[bytes]:
    """`mcode serve --workers 2`, as an operator runs it."""
    env = os.environ | {
        "MCODE_ENV": "test", "MCODE_DATABASE_URL": DATABASE_URL, "MCODE_REDIS_URL": REDIS_URL,
        "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_SIGNING_KEYS": SIGNING, "MCODE_EVENT_SECRETS": SECRET,
        "MCODE_REDIS_PREFIX": f"tm{port}:", "MCODE_EMBEDDED_WRITER": "0", "MCODE_SPOOL_DIR": f"/tmp/mcode-tm{port}",
        "MCODE_COOKIE_SECURE": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the server's workers share a folder of their own
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--workers", "2", "--port", str(port)],
                                env=env, stdout=out, stderr=out)


async def test_counts_are_summed_across_workers(code: Maker, tmp_path: Path) -> None:
    c = await code()
    port = free_port()
    server = serve(port, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        for i in range(40):  # a new connection each time, so the kernel spreads them over the workers
            async with httpx.AsyncClient(base_url=base) as buyer:
                r = await buyer.get(f"/e/{c['code']}", headers=BUYER | {"user-agent": f"{IPHONE} w{i}"})
                assert r.status_code == 302
            async with httpx.AsyncClient(base_url=base) as bot:
                assert (await bot.get(f"/e/{c['code']}", headers={"user-agent": "curl/8"})).status_code == 302
        text = ""
        for _ in range(50):  # the workers flush within FLUSH_S; any worker's scrape reads them all
            async with httpx.AsyncClient(base_url=base) as scraper:
                text = (await scraper.get("/metrics")).text
            if value(text, f"{H}_count") == 80:
                break
            await asyncio.sleep(0.1)
        assert value(text, 'mcode_clicks_total{reason="valid"}') == 40
        assert value(text, 'mcode_clicks_total{reason="ERR_BOT"}') == 40
        assert value(text, f"{H}_count") == 80
        assert re.search(r'^mcode_clicks_total\{reason="ERR_DUP"\} 0\.0$', text, re.M)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
