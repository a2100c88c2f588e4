import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, DATABASE_URL, PG_ROOT, REDIS_URL, SECRET, SIGNING, Maker
from tests.test_imports import HEADER


def mcode(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCODE_")} | {
        "MCODE_ENV": "test", "MCODE_DATABASE_URL": DATABASE_URL, "MCODE_REDIS_URL": REDIS_URL,
        "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_SIGNING_KEYS": SIGNING, "MCODE_EVENT_SECRETS": SECRET,
        "MCODE_SPOOL_DIR": str(cwd / "spool"),
    }
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          env=base | env, cwd=cwd, timeout=60)


def closed_port() -> int:
    """A local port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pg_url_at(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/mcode_nowhere"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """What a command that could not start said: non-zero status, one line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("mcode: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["migrate", "demo", "writer", "serve"])
def test_postgres_not_answering_at_start_is_one_line_after_bounded_retries(command: str, tmp_path: Path) -> None:
    port = closed_port()
    started = time.monotonic()
    result = mcode(command, cwd=tmp_path, MCODE_DATABASE_URL=pg_url_at(port), MCODE_START_WAIT_S="1")
    took = time.monotonic() - started
    line = one_line(result)
    assert f"PostgreSQL at 127.0.0.1:{port} did not answer after " in line, line
    assert "tries over 1 s: Connection refused" in line, line
    assert took < 15, took


@pytest.mark.parametrize("command", ["writer", "serve"])
def test_redis_not_answering_at_start_is_one_line(command: str, tmp_path: Path) -> None:
    port = closed_port()
    line = one_line(mcode(command, cwd=tmp_path, MCODE_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                          MCODE_START_WAIT_S="1"))
    assert f"Redis at 127.0.0.1:{port} did not answer after " in line and "Connection refused" in line, line


def test_both_not_answering_are_named_in_the_one_line(tmp_path: Path) -> None:
    pg, rd = closed_port(), closed_port()
    line = one_line(mcode("serve", cwd=tmp_path, MCODE_DATABASE_URL=pg_url_at(pg), MCODE_START_WAIT_S="0.5",
                          MCODE_REDIS_URL=f"redis://127.0.0.1:{rd}/0,redis://127.0.0.1:{pg}/0"))
    assert f"PostgreSQL at 127.0.0.1:{pg} did not answer" in line, line
    assert f"Redis at 127.0.0.1:{rd}, 127.0.0.1:{pg} did not answer" in line, line


def test_a_refusal_is_not_retried(tmp_path: Path) -> None:
    started = time.monotonic()
    line = one_line(mcode("migrate", cwd=tmp_path, MCODE_DATABASE_URL=f"{PG_ROOT.replace('postgres@', 'nobody@')}/x",
                          MCODE_START_WAIT_S="30"))
    assert "refused the connection" in line and "nobody" in line, line
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("MCODE_DEDUP_WINDOW_S", "an hour", "MCODE_DEDUP_WINDOW_S: "),
    ("MCODE_SIGNING_KEYS", "short", "MCODE_SIGNING_KEYS: every value needs at least 16 characters"),
    ("MCODE_REDIS_URL", "http://127.0.0.1:6379", "MCODE_REDIS_URL: "),
    ("MCODE_START_WAIT_S", "soon", "MCODE_START_WAIT_S: "),
    ("MCODE_LOG_LEVEL", "loud", "MCODE_LOG_LEVEL: "),
])
@pytest.mark.parametrize("command", ["serve", "writer"])
def test_a_bad_setting_is_one_line_naming_it(command: str, variable: str, value: str, named: str,
                                             tmp_path: Path) -> None:
    assert named in one_line(mcode(command, cwd=tmp_path, **{variable: value}))


def test_debug_log_level_shows_the_traceback(tmp_path: Path) -> None:
    result = mcode("migrate", cwd=tmp_path, MCODE_DATABASE_URL=pg_url_at(closed_port()), MCODE_START_WAIT_S="0",
                   MCODE_LOG_LEVEL="debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "StartupError: PostgreSQL at 127.0.0.1:" in result.stderr


def test_plain_uvicorn_ends_with_the_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCODE_")} | {
        "MCODE_ENV": "dev", "MCODE_DATABASE_URL": pg_url_at(closed_port()), "MCODE_START_WAIT_S": "0.5",
        "MCODE_REDIS_URL": REDIS_URL, "MCODE_SPOOL_DIR": str(tmp_path / "spool"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    result = subprocess.run([sys.executable, "-m", "uvicorn", "service.app:app", "--port", str(closed_port())],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    # uvicorn prints Starlette's traceback of a failed lifespan itself; its last line is ours
    assert "StartupError: PostgreSQL at 127.0.0.1:" in result.stderr and "did not answer after" in result.stderr


def test_plain_uvicorn_refuses_a_bad_setting_in_one_line_instead_of_serving(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCODE_")} | {
        "MCODE_ENV": "prod", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-m", "uvicorn", "service.app:app", "--port", str(closed_port())],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "mcode: refusing to start: MCODE_SIGNING_KEYS holds the shipped development value" in result.stderr
    assert "Traceback" not in result.stderr


async def test_import_reports_rows_and_writes_results(
    client: httpx.AsyncClient, seller: Maker, product: Maker, tmp_path: Path
) -> None:
    s = await seller()
    p = await product(s["seller_id"])
    src = tmp_path / "codes.csv"
    lines = [HEADER] + [f"{s['seller_id']},{p['product_id']},vk,post,vk_202406_x,c{i}," for i in range(30)]
    src.write_text("\ufeff" + "\n".join([*lines, f"{s['seller_id']},nope,vk,post,x,y,"]) + "\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    result = mcode("import", str(src), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "created 30, existing 0, failed 1" in result.stdout
    assert "row 32: ERR_422" in result.stderr
    assert "31/31" in result.stderr  # the progress bar reached the end
    assert out.read_text().splitlines()[0].endswith("code,short_url,error")
    again = mcode("import", str(src), cwd=tmp_path)
    assert "created 0, existing 30, failed 1" in again.stdout


def test_refuses_to_start_with_shipped_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCODE_")}
    result = subprocess.run([sys.executable, "-m", "service.cli", "migrate"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "refusing to start" in result.stderr


async def test_demo_creates_codes_that_redirect(client: httpx.AsyncClient, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    result = mcode("demo", cwd=tmp_path, MCODE_PUBLIC_URL=nowhere)
    assert result.returncode == 0, result.stderr
    assert "seller key (shown once): sk_" in result.stdout
    assert "Try it:" in result.stdout and "mcode event -" in result.stdout
    assert f"nothing answers at {nowhere} yet" in result.stderr  # tests/test_demo.py runs the steps
    urls = [line.strip() for line in result.stdout.splitlines() if "/e/" in line and line.startswith("  http")]
    assert len(urls) == 3
    again = mcode("demo", cwd=tmp_path, MCODE_PUBLIC_URL=nowhere)
    assert [line.strip() for line in again.stdout.splitlines() if line.startswith("  http")] == urls
    for url in urls:
        r = await client.get("/e/" + url.rsplit("/e/", 1)[1], headers={"user-agent": "Mozilla/5.0 (X11) Firefox/125"})
        assert r.status_code == 302


def test_the_address_served_on_as_links_name_it() -> None:
    from service.cli import _local_url

    assert _local_url("0.0.0.0", 8411) == "http://127.0.0.1:8411"  # noqa: S104 - every address: this machine's own
    assert _local_url("::", 8411) == "http://[::1]:8411"
    assert _local_url("::1", 80) == "http://[::1]:80"
    assert _local_url("shop.local", 8000) == "http://shop.local:8000"
