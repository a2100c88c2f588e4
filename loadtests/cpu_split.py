"""Where the CPU goes while wrk drives a running server: seconds per process group (uvicorn
workers, Redis, Postgres, a separate `mcode writer`, wrk itself, everything else), read from
/proc before and after one wrk run, and divided by the requests answered. Linux only.

    .venv/bin/python loadtests/cpu_split.py URL [SECONDS]

URL is a redirect of a server already running (e.g. started as loadtests/bench.py starts it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def group_of(cmdline: str) -> str:
    if "redis-server" in cmdline:
        return "redis"
    if "postgres" in cmdline:
        return "postgres"
    if "spawn_main" in cmdline:
        return "uvicorn workers"
    if "mcode" in cmdline and "writer" in cmdline:
        return "mcode writer"
    return "other"


def cpu_by_process() -> dict[tuple[str, str], float]:
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        out[(group_of(cmdline), pid)] = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return out


def machine_busy() -> float:
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS  # all but idle and iowait


def main() -> None:
    url, seconds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10
    before, busy_before = cpu_by_process(), machine_busy()
    run_id = f"c{int(time.time()) % 10**7}"  # clicks.lua keeps 8 characters of it
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "-s", str(HERE / "clicks.lua"), url, "--", run_id],
        stdout=subprocess.PIPE, text=True,
    )
    assert wrk.stdout is not None
    report = wrk.stdout.read()
    _, _, usage = os.wait4(wrk.pid, 0)
    after, busy = cpu_by_process(), machine_busy() - busy_before
    found = re.search(r"(\d+) requests in", report)
    if found is None:
        raise SystemExit(f"wrk gave no result:\n{report}")
    requests = int(found.group(1))
    groups = {"wrk": usage.ru_utime + usage.ru_stime}
    for key, used in after.items():
        groups[key[0]] = groups.get(key[0], 0.0) + used - before.get(key, 0.0)
    print(f"{requests} requests in {seconds} s ({requests / seconds:.0f}/s)")
    for name, used in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {name:<16}{used:7.2f} s  {1e6 * used / requests:6.1f} us/request")
    cores = os.cpu_count() or 1
    print(f"  machine busy    {busy:7.2f} s of {cores * seconds} ({1e6 * busy / requests:.1f} us/request)")


if __name__ == "__main__":
    main()
