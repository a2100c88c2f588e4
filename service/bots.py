"""Is this request a bot, a prefetch or a link preview?  (pure, cached)

The crawler patterns come from the maintained `crawler-user-agents` list; a few rules of our
own add what it leaves out (HTTP libraries, headless browsers, preview fetchers, empty UAs).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources

# Fetchers the list misses or that matter most to a link shortener: messenger and social
# previews, headless browsers, HTTP libraries and command-line tools.
EXTRA_PATTERNS = (
    r"\bbot\b", r"[a-z]bot/", r"crawl", r"spider", r"slurp", r"preview", r"fetcher", r"scanner", r"monitor",
    r"facebookexternalhit", r"facebookcatalog", r"meta-externalagent", r"whatsapp/", r"telegrambot",
    r"skypeuripreview", r"slackbot", r"slack-imgproxy", r"discordbot", r"vkshare", r"kakaotalk-scrap",
    r"pinterestbot", r"redditbot", r"embedly", r"iframely", r"bitlybot",
    r"headless", r"phantomjs", r"puppeteer", r"playwright", r"selenium", r"webdriver",
    r"lighthouse", r"pagespeed", r"gtmetrix", r"pingdom", r"uptime",
    r"^curl", r"^wget", r"python", r"httpx", r"aiohttp", r"requests", r"urllib", r"go-http-client",
    r"okhttp", r"^java", r"apache-httpclient", r"libwww-perl", r"^lwp", r"axios", r"node-fetch", r"undici",
    r"got \(", r"^ruby", r"faraday", r"^php", r"guzzle", r"httpclient", r"^dart", r"restsharp", r"postman",
    r"insomnia", r"httpie", r"^mozilla/[45]\.0$", r"^-$",
)
PREFETCH = "prefetch"


def _list_patterns() -> list[str]:
    text = resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text(encoding="utf-8")
    return [entry["pattern"] for entry in json.loads(text)]


class Bots:
    def __init__(self, patterns: Iterable[str] | None = None) -> None:
        chosen = list(patterns) if patterns is not None else _list_patterns() + list(EXTRA_PATTERNS)
        self.regex = re.compile("|".join(f"(?:{p})" for p in chosen), re.IGNORECASE)
        self.by_user_agent = functools.lru_cache(maxsize=50_000)(self._judge)

    def _judge(self, user_agent: str) -> bool:
        return not user_agent.strip() or self.regex.search(user_agent) is not None

    def is_bot(self, method: str, headers: Mapping[str, str]) -> bool:
        if method == "HEAD":
            return True
        purpose = headers.get("sec-purpose") or headers.get("purpose") or ""
        if PREFETCH in purpose.lower() or headers.get("x-moz", "").lower() == PREFETCH:
            return True
        return bool(self.by_user_agent(headers.get("user-agent", "")))
