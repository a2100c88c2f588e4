"""How well service.bots judges public User-Agent lists it was not written against.

    .venv/bin/python loadtests/bots_eval.py DATA_DIR

DATA_DIR holds one UA per line in files named *crawlers.txt / *bots.txt (should be flagged)
and *browsers.txt / *devices.txt (should not). The lists used for RESULTS.md come from
registry packages (built by the research script noted there): the crawlerdetect sdist's
JayBizzle fixtures, woothee's test sets, fake-useragent, and the npm packages user-agents,
top-user-agents and @ulixee/real-user-agents. The rules in service/bots.py were written
against other lists (Matomo's fixtures and crawler-user-agents' own examples).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.bots import Bots

BOT_SUFFIXES = ("crawlers.txt", "bots.txt", "libraries.txt")
HUMAN_SUFFIXES = ("browsers.txt", "devices.txt")


def main() -> None:
    data = Path(sys.argv[1])
    bots = Bots()
    for path in sorted(data.glob("*.txt")):
        uas = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.name.endswith(BOT_SUFFIXES):
            kind, wanted = "recall", True
        elif path.name.endswith(HUMAN_SUFFIXES):
            kind, wanted = "false positives", False
        else:
            continue
        started = time.perf_counter()
        hits = sum(bots._judge(ua) == wanted for ua in uas) if wanted else sum(bots._judge(ua) for ua in uas)
        micros = (time.perf_counter() - started) / len(uas) * 1e6
        print(f"{path.stem:<36} {kind:<16} {100 * hits / len(uas):6.2f}%  ({hits}/{len(uas)}), {micros:.0f} µs/UA")


if __name__ == "__main__":
    main()
