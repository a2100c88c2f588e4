"""`mcode demo`'s printed steps, pasted into bash against a real server (issue #14).

The service runs as a user runs it, `PORT=… scripts/dev.sh run`, on the run's test database and a
Redis prefix of its own, with no MCODE_PUBLIC_URL: the port has to reach the short links by itself.
`PORT=… scripts/dev.sh mcode demo` prints the steps; bash runs them as printed, one shell for all
(they share $CLICK and $ORDER): a click with a browser's User-Agent, the order and its payment
through `scripts/dev.sh mcode event -`, and the seller's report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.auth import verify_signature
from tests.conftest import ADMIN, ADMIN_HEADERS, DATABASE_URL, REDIS_URL, RUN, SECRET, SIGNING, UTM, drop_redis_keys
from tests.faults import free_port
from tests.server import start, stop

ROOT = Path(__file__).resolve().parent.parent
PREFIX = f"t{RUN}demo:"
TRY_IT = "Try it:"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test's own MCODE_* settings and nothing else of the kind (no MCODE_PUBLIC_URL)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MCODE_") and k not in ("PORT", "HOST", "WORKERS", "PROMETHEUS_MULTIPROC_DIR")}
    return env | {
        "MCODE_ENV": "test", "MCODE_DATABASE_URL": DATABASE_URL, "MCODE_REDIS_URL": REDIS_URL,
        "MCODE_REDIS_PREFIX": PREFIX, "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_SIGNING_KEYS": SIGNING,
        "MCODE_EVENT_SECRETS": SECRET, "MCODE_SPOOL_DIR": str(tmp / "spool"), "MCODE_START_WAIT_S": "5",
    } | extra


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, str]]]:
    """`PORT=<free> WORKERS=1 scripts/dev.sh run`: the port and the environment it was started with."""
    tmp = tmp_path_factory.mktemp("demo")
    env = _env(tmp, WORKERS="1")
    proc, port = start(["scripts/dev.sh", "run"], env, tmp / "server.log", ROOT)
    try:
        yield port, env | {"PORT": str(port)}
    finally:
        stop(proc)
        _drop_keys()


def _drop_keys() -> None:
    drop_redis_keys(PREFIX)


def json_documents(text: str) -> list[Any]:
    """Every JSON object in text, in order (the steps print other lines between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (start := text.find("{", at)) != -1:
        doc, at = decoder.raw_decode(text, start)
        found.append(doc)
    return found


@pytest.mark.skipif(shutil.which("curl") is None, reason="the demo's steps use curl, which is not installed")
def test_the_demo_steps_work_when_pasted(served: tuple[int, dict[str, str]]) -> None:
    port, env = served
    demo = subprocess.run(["scripts/dev.sh", "mcode", "demo"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert demo.returncode == 0, demo.stderr
    links = [line.strip() for line in demo.stdout.splitlines() if line.startswith("  http")]
    assert len(links) == 3 and all(u.startswith(f"http://127.0.0.1:{port}/e/") for u in links), demo.stdout
    assert "nothing answers" not in demo.stderr
    steps = demo.stdout.split(TRY_IT, 1)[1].split("\n", 1)[1]
    assert "scripts/dev.sh mcode event -" in steps and "Mozilla/5.0" in steps

    # pasted into a shell of their own, where PORT and MCODE_PUBLIC_URL are unknown
    pasted = subprocess.run(["bash"], input=steps, env={k: v for k, v in env.items() if k != "PORT"}, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    click_id = pasted.stdout.split("mc_click=", 1)[1].split()[0]
    order, payment, report = json_documents(pasted.stdout)
    assert pasted.stderr.count("201 Created") == 2, pasted.stderr
    assert (order["type"], order["status"], order["reason"], order["click_id"]) == (
        "order", "attributed", None, click_id), order
    assert order["commission"] == {"amount": "1.60", "currency": "USD", "rate": "0.08", "status": "pending"}
    assert payment["order_id"] == order["order_id"]
    assert payment["commission"]["status"] == "payable", payment
    assert "rows" in report, report
    [row] = [r for r in report["rows"] if r["channel"] == "instagram"]
    assert (row["orders"], row["paid_orders"], row["commission"], row["pending_commission"], row["gmv"]) == (
        1, 1, {"USD": "1.60"}, {"USD": "0.00"}, {"USD": "19.99"}), row


def test_event_exits_non_zero_unless_the_answer_is_2xx(served: tuple[int, dict[str, str]]) -> None:
    _, env = served
    ran = subprocess.run(["scripts/dev.sh", "mcode", "event", "-"], input=b'{"type": "order"}', env=env, cwd=ROOT,
                         capture_output=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.decode().strip().endswith("422 Unprocessable Entity")
    assert json.loads(ran.stdout)["error"]["code"] == "ERR_422"
    # signed with a secret the service does not know
    wrong = subprocess.run(["scripts/dev.sh", "mcode", "event", "-"], input=b"{}", cwd=ROOT, capture_output=True,
                           env=env | {"MCODE_EVENT_SECRETS": "another-secret-0123456789"}, timeout=60)
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["error"]["code"] == "ERR_401"
    nobody = subprocess.run(["scripts/dev.sh", "mcode", "event", "-"], input=b"{}", cwd=ROOT, capture_output=True,
                            env=env | {"PORT": str(free_port())}, timeout=60)
    assert nobody.returncode == 1 and b"Connection refused" in nobody.stderr


def test_event_print_only_signs_the_exact_bytes(tmp_path: Path) -> None:
    body = b'{"event_id": "e1",  "type": "cart"}\r\n'  # spacing and line end are part of what is signed
    (tmp_path / "event.json").write_bytes(body)
    ran = subprocess.run([sys.executable, "-m", "service.cli", "event", "--print-only", "--timestamp", "1700000000",
                          "event.json"], env=_env(tmp_path), cwd=tmp_path, capture_output=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    head, printed = ran.stdout.split(b"\n\n", 1)
    assert printed == body
    name, _, signature = head.decode().partition(": ")
    assert name == "Mcode-Signature" and signature.startswith("t=1700000000,v1=")
    verify_signature(signature, body, [SECRET], now=1700000000)


def test_serve_without_public_url_links_to_its_own_port(tmp_path: Path) -> None:
    env = _env(tmp_path, MCODE_EMBEDDED_WRITER="0")
    proc, port = start([sys.executable, "-m", "service.cli", "serve", "--port", "{port}"], env,
                        tmp_path / "serve.log", tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        seller, product = f"s-demo{RUN}", f"p-demo{RUN}"
        for path, body in (
            (f"/v1/sellers/{seller}", {"name": "Kid Shop", "status": "active", "verified": True,
                                       "affiliate_enabled": True}),
            (f"/v1/products/{product}", {"seller_id": seller, "url": "https://www.aliexpress.com/item/1.html",
                                         "category": "toys", "status": "listed", "stock": 5}),
        ):
            assert httpx.put(base + path, json=body, headers=ADMIN_HEADERS, timeout=10).status_code in (200, 201)
        r = httpx.post(f"{base}/v1/codes", json={"seller_id": seller, "product_id": product, **UTM},
                       headers=ADMIN_HEADERS, timeout=10)
        assert r.json()["short_url"].startswith(f"{base}/e/"), r.text
    finally:
        stop(proc)
        _drop_keys()
    assert f"MCODE_PUBLIC_URL is not set: short links say {base}" in (tmp_path / "serve.log").read_text()
