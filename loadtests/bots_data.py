"""Rebuild the UA lists that loadtests/bots_eval.py judges, from registry packages only.

    .venv/bin/python loadtests/bots_data.py /work/botdata

Downloads pinned versions with `pip download --no-deps` and `npm pack` into a temporary directory
and writes one UA per line to DATA_DIR: *crawlers.txt must be flagged, *browsers.txt and
*devices.txt must not, *mixed.txt are unlabelled (only the share flagged is shown). Nothing
downloaded is committed: this script is the trail.

Lists big enough to tune on (crawlers, and since session 4 the WhatIsMyBrowser browsers and in-app
browsers too) are split by sha1(ua) into a "tune" half, whose misses (or false positives) may be read
while writing rules, and a "heldout" half, whose must not be. Lists the rules were written against
(Matomo's device-detector fixtures; the AI-crawler names of ai-crawler-index, read in full while
writing the AI-agent rules) are written as "*-insample-*", for regressions only; crawler-user-agents'
own instances are left out.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

PYPI = {
    "crawlerdetect": "0.4.2", "fake-useragent": "2.2.0", "device-detector": "6.5.1",
    "random-user-agent": "1.0.1",  # a 2018 WhatIsMyBrowser snapshot: 326,132 UAs, each with a software type
    "ai-crawler-index": "1.3.0",  # 150 AI / search / SEO crawler names (no full UA strings), data CC0
}
# their fixtures / data are not in the wheels
SDIST_ONLY = {"crawlerdetect", "device-detector", "random-user-agent", "ai-crawler-index"}
NPM = {
    "woothee": "1.11.1",
    "user-agents": "2.1.198",
    "top-user-agents": "2.1.138",
    "@ulixee/real-user-agents": "2.0.0-alpha.34",
    "bot-detector": "1.0.10",  # ships user-agents.org's allagents list
    "ua-parser": "0.3.5",  # the only npm build that ships uap-core's test_resources
    "is-ua-webview": "1.1.2",  # its tests' webview / not-webview strings (in-app browsers, all human)
    "header-generator": "2.1.88",  # Apify's browser UAs seen in real traffic (2026)
}

# uap-core labels UA families, not bots; these families in test_user_agent_parser.yaml are automated.
UAP_BOT_FAMILIES = frozenset({
    "FacebookBot", "GooglePlusBot", "Googlebot", "LinkedInBot", "PhantomJS", "PingdomBot",
    "PyAMF", "Python Requests", "RackspaceBot", "YottaaMonitor",
})
# Mail clients are neither: their own requests (images, Office link probes) are not a buyer's click.
UAP_MAIL_FAMILIES = frozenset({"Outlook", "Airmail", "AppleMail", "Thunderbird", "Lightning"})
WOOTHEE_HUMAN = frozenset({"pc", "smartphone", "mobilephone"})
# random-user-agent (WhatIsMyBrowser): software types "bot -> *" are bots; of "application -> *" only
# these names are HTTP clients with no human behind them (Adobe AIR, JavaFX, Awesomium are app webviews)
# ("java-runtime-environment" is left out: WhatIsMyBrowser files J2ME phones and Java browsers under it)
RUA_LIBRARIES = frozenset({
    "curl", "wget", "library-for-www-in-perl", "python-urllib", "okhttp", "httpclient",
    "jakarta-commons-httpclient", "pecl-http-library", "microsoft-cryptoapi", "spraycan", "splash",
})
# WhatIsMyBrowser's bot labels that are token collisions with a human app or device (Yahoo Japan's apps
# as "Yahoo Slurp", HTC Butterfly phones as "Topsy Butterfly", Sogou's mobile browser as its spider,
# COSMOS feature phones as the Cosmos crawler, the Pinterest and Yahoo Messenger apps): such UAs go to
# the unlabelled list. Drawn from the tune half's misses and applied to both halves alike.
RUA_NOT_A_BOT = re.compile(r"YJApp-|Butterfly[ _]|butterfly 3|Sogou(?:MSE|Mobile|search|Search)|_COSMOS_|Cosmos V\d|"
                           r"Pinterest for Android|YahooMobileMessenger")
# mail clients are neither (see UAP_MAIL_FAMILIES); WhatIsMyBrowser files Outlook / Office under web browsers
RUA_MAIL = frozenset({"outlook", "office", "thunderbird", "word"})
# the ai-crawler-index names, as an AI agent's page fetch sends them inside a browser-like string
AI_SHELLS = (
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; {name}/1.0)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 (compatible; {name}/1.0)",
)


def heldout(ua: str) -> bool:
    # a stable split, not security: any UA lands in the same half on every machine and run
    return hashlib.sha1(ua.encode("utf-8"), usedforsecurity=False).digest()[0] & 1 == 1


# A click on a link inside a Word / Excel / PowerPoint / OneNote document: the app's own fetch is the
# only request the click makes to us (see "office" in service/bots.py), so the service judges it a
# human's. JayBizzle lists these as crawlers and as devices; they are taken out of every labelled list
# and shown on their own (officelinks-mixed.txt), as a policy and not a detection question.
OFFICE_LINK = re.compile(r"^Microsoft Office (?:Word|Excel|PowerPoint|OneNote|Visio|Access|Publisher|Project)\b"
                         r"(?!.*Outlook)|\) (?:Word|Excel|PowerPoint|OneNote)/\d|"
                         r"^Mozilla/4\.0 \(compatible; ms-office; MSOffice \d+\)$")
office_links: set[str] = set()


def write(out: Path, name: str, uas: Iterable[str]) -> None:
    clean = sorted({ua for ua in uas if ua and ua.strip() and "\n" not in ua and "\r" not in ua})
    if not name.endswith("mixed.txt"):
        office_links.update(ua for ua in clean if OFFICE_LINK.search(ua))
        clean = [ua for ua in clean if not OFFICE_LINK.search(ua)]
    (out / name).write_text("".join(f"{ua}\n" for ua in clean), encoding="utf-8")
    print(f"{name:<40} {len(clean):>7}")


def write_split(out: Path, stem: str, uas: Iterable[str], kind: str = "crawlers") -> None:
    uas = list(uas)
    write(out, f"{stem}-tune-{kind}.txt", (ua for ua in uas if not heldout(ua)))
    write(out, f"{stem}-heldout-{kind}.txt", (ua for ua in uas if heldout(ua)))


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


def second_opinion(sdist: Path, work: Path) -> Callable[[str], bool]:
    """CrawlerDetect's own is_crawler, imported from its sdist (it is not one of our dependencies)."""
    with tarfile.open(sdist) as tf:
        tf.extractall(work / "crawlerdetect-src", filter="data")
    sys.path.insert(0, str(next((work / "crawlerdetect-src").iterdir())))
    from crawlerdetect import CrawlerDetect  # type: ignore[import-not-found]

    detector = CrawlerDetect()
    return functools.lru_cache(maxsize=None)(lambda ua: bool(detector.is_crawler(ua)))


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

        # WhatIsMyBrowser's 2018 snapshot, labelled by software type: bots, HTTP libraries, in-app
        # browsers (Facebook, Pinterest, Twitter apps, Electron apps, Steam's overlay...), web browsers
        rua_zip = zipfile.ZipFile(io.BytesIO(member(pkg["random-user-agent"],
                                                    "random_user_agent/data/user_agents.zip")))
        rua: dict[str, list[str]] = {"bots": [], "libraries": [], "inapp": [], "web": [], "mail": [], "other": []}
        with rua_zip.open("user_agents.jl") as jl:
            for raw in jl:
                entry = json.loads(raw)
                kind, name = entry["software_type"], entry["software_name"]
                if kind.startswith("bot ->") and RUA_NOT_A_BOT.search(entry["user_agent"]):
                    rua["other"].append(entry["user_agent"])
                elif kind.startswith("bot ->") or name in RUA_LIBRARIES:
                    rua["bots" if kind.startswith("bot ->") else "libraries"].append(entry["user_agent"])
                elif name in RUA_MAIL:
                    rua["mail"].append(entry["user_agent"])
                elif kind == "browser -> in-app-browser":
                    rua["inapp"].append(entry["user_agent"])
                elif kind == "browser -> web-browser":
                    rua["web"].append(entry["user_agent"])
                else:
                    rua["other"].append(entry["user_agent"])
        write_split(out, "rua-bots", rua["bots"])
        write_split(out, "rua-http", rua["libraries"], "libraries")
        # WhatIsMyBrowser also files headless Chrome, PhantomJS and many crawlers under web browsers: a UA
        # that JayBizzle's CrawlerDetect (a second, independent opinion) calls a crawler is disputed and
        # goes to its own unlabelled list rather than counting as a false positive or a true negative
        crawler_detect = second_opinion(pkg["crawlerdetect"], Path(tmp))
        disputed = [ua for ua in rua["inapp"] + rua["web"] if crawler_detect(ua)]
        write_split(out, "rua-inapp", (ua for ua in rua["inapp"] if not crawler_detect(ua)), "browsers")
        write_split(out, "rua-web", (ua for ua in rua["web"] if not crawler_detect(ua)), "browsers")
        write(out, "rua-disputed-mixed.txt", disputed)
        write(out, "rua-mailclients-mixed.txt", rua["mail"])
        write(out, "rua-other-mixed.txt", rua["other"])  # app webviews, proxies, players, QQDownload IE...

        webview = [
            m.group(1)
            for path in ("test/data/webview.js", "test/data/not-webview.js")
            for line in lines(member(pkg["is-ua-webview"], path))
            if (m := re.match(r'\s*"(.+)",?\s*$', line))
        ]
        write(out, "isuawebview-browsers.txt", webview)

        network_zip = member(pkg["header-generator"], "data_files/header-network-definition.zip")
        with zipfile.ZipFile(io.BytesIO(network_zip)) as zf:
            network = json.loads(zf.read("network.json"))
        write(out, "headergenerator-browsers.txt", (
            value for node in network["nodes"] if node["name"].lower() == "user-agent"
            for value in node["possibleValues"] if not value.startswith("*")))

        ai_names = json.loads(member(pkg["ai-crawler-index"], "ai_crawler_index/data.json"))["crawlers"]
        write(out, "aicrawlerindex-insample-crawlers.txt", (
            shell.format(name=c["ua"]) for c in ai_names if not c["ua"].startswith("(") for shell in AI_SHELLS))

        write(out, "officelinks-mixed.txt", office_links)


if __name__ == "__main__":
    main()
