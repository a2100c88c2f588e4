"""A service of the test's own as a real process: started on a free port, ready once /readyz says
200, and stopped."""

import subprocess
import time
from pathlib import Path

import httpx

from tests.faults import free_port


def start(argv: list[str], env: dict[str, str], log: Path, cwd: Path,
          ready_s: float = 60) -> tuple[subprocess.Popen[bytes], int]:
    """argv (with {port} filled in, or PORT in env) serving on a free port, once /readyz answers 200."""
    for _ in range(3):  # the free port may be taken before uvicorn binds it
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen([a.format(port=port) for a in argv], env=env | {"PORT": str(port)}, cwd=cwd,
                                    stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_s  # scripts/dev.sh may have to check the venv and services first
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return proc, port
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        if proc.poll() is None:
            stop(proc)
            raise AssertionError(f"the service did not become ready:\n{log.read_text()}")
        if "address already in use" not in log.read_text():
            break
    raise AssertionError(f"the service exited with {proc.returncode}:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
