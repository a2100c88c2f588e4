import re
from pathlib import Path

import pytest

from service.bots import EXTRA_RULES, Bots, is_prefetch

DATA = Path(__file__).parent / "data"
BOTS = Bots()


def lines(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.parametrize("ua", lines("bot_user_agents.txt"))
def test_crawlers_previews_headless_and_http_libraries_are_bots(ua: str) -> None:
    assert BOTS.is_bot("GET", {"user-agent": ua})


@pytest.mark.parametrize("ua", lines("browser_user_agents.txt"))
def test_browsers_and_in_app_browsers_are_not(ua: str) -> None:
    assert not BOTS.is_bot("GET", {"user-agent": ua})


def test_header_rules() -> None:
    browser = lines("browser_user_agents.txt")[0]
    assert BOTS.is_bot("HEAD", {"user-agent": browser})
    assert BOTS.is_bot("GET", {})
    assert BOTS.is_bot("GET", {"user-agent": "   "})
    assert not BOTS.is_bot("GET", {"user-agent": browser})


def test_prefetch_signals() -> None:
    assert is_prefetch({"sec-purpose": "prefetch;prerender"})
    assert is_prefetch({"sec-purpose": "prefetch"})
    assert is_prefetch({"purpose": "Prefetch"})
    assert is_prefetch({"x-moz": "prefetch"})
    assert not is_prefetch({"sec-purpose": "prerender"})
    assert not is_prefetch({})


def test_patterns_that_match_real_browsers_are_dropped() -> None:
    viber_in_app = ("Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
                    "(KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36 Viber/21.0.1.0")
    assert not BOTS.is_bot("GET", {"user-agent": viber_in_app})
    cubot_phone = ("Mozilla/5.0 (Linux; Android 11; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/120.0.0.0 Mobile Safari/537.36")
    assert not BOTS.is_bot("GET", {"user-agent": cubot_phone})


def test_rules_split_between_re2_and_re_judge_like_one_re() -> None:
    # RE2 and re differ at the edges (lookaround, Unicode classes): the split must not change a verdict
    every_rule = re.compile("|".join(f"(?:{p})" for group in EXTRA_RULES.values() for p in group))
    assert len(BOTS.ours_lookaround.pattern.split("|(?:")) < 10
    for ua in lines("bot_user_agents.txt") + lines("browser_user_agents.txt"):
        low = ua.strip().lower()
        split = BOTS.ours.search(low) is not None or BOTS.ours_lookaround.search(low) is not None
        assert split == (every_rule.search(low) is not None), ua
