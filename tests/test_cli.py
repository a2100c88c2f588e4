import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ADMIN, DATABASE_URL, REDIS_URL, SECRET, SIGNING, Maker
from tests.test_imports import HEADER


def mcode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "MCODE_ENV": "test", "MCODE_DATABASE_URL": DATABASE_URL, "MCODE_REDIS_URL": REDIS_URL,
        "MCODE_ADMIN_TOKENS": ADMIN, "MCODE_SIGNING_KEYS": SIGNING, "MCODE_EVENT_SECRETS": SECRET,
    }
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


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
    result = mcode("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "seller key (shown once): sk_" in result.stdout
    urls = [line.strip() for line in result.stdout.splitlines() if "/e/" in line and line.startswith("  http")]
    assert len(urls) == 3
    again = mcode("demo", cwd=tmp_path)
    assert [line.strip() for line in again.stdout.splitlines() if line.startswith("  http")] == urls
    for url in urls:
        r = await client.get("/e/" + url.rsplit("/e/", 1)[1], headers={"user-agent": "Mozilla/5.0 (X11) Firefox/125"})
        assert r.status_code == 302
