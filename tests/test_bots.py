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


def test_office_hyperlink_fetch_is_the_click_outlook_fetches_are_not() -> None:
    # Word/Excel/PowerPoint fetch a clicked link themselves, follow our 302 and give the browser the
    # product URL: that fetch is the buyer's click. Outlook's engine and Office's probes are not clicks.
    for ua in ("Microsoft Office Word 2014 (16.0.4266) Windows NT 10.0",
               "Microsoft Office Excel 2013 (15.0.4675) Windows NT 6.1",
               "Mozilla/5.0 (Macintosh; Intel Mac OS X) PowerPoint/16.78.0",
               "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"):
        assert not BOTS.is_bot("GET", {"user-agent": ua}), ua
    for ua in ("Microsoft Office Existence Discovery",
               "MacOutlook/16.41.20091302 (Intelx64 Mac OS X 10.14.4 (Build 18E226))",
               "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; Trident/7.0; Microsoft Outlook 16.0.4266; "
               "ms-office; MSOffice 16)"):
        assert BOTS.is_bot("GET", {"user-agent": ua}), ua


def test_an_app_shell_excuses_app_names_not_bot_signals() -> None:
    webview = ("Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
               "(KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Mobile Safari/537.36 {}")
    for app in ("Blackboard/3.7.1", "Feedly/1.0", "Tumblr/33.3", "OKApp/24.1.1", "CamScanner/6.50"):
        assert not BOTS.is_bot("GET", {"user-agent": webview.format(app)}), app
    for tool in ("SomeCrawler/1.0", "(compatible; ExampleBot/2.1)", "HeadlessChrome", "GPTBot/1.2", "+https://example.com/info"):
        assert BOTS.is_bot("GET", {"user-agent": webview.format(tool)}), tool
    electron = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) {}/2.2.4 "
                "Chrome/118.0.5993.159 Electron/27.1.3 Safari/537.36")
    assert not BOTS.is_bot("GET", {"user-agent": electron.format("Notion")})
    # a coding tool reads a link; a person's click in an editor opens the system browser
    assert BOTS.is_bot("GET", {"user-agent": electron.format("Cursor")})


def test_a_browser_token_with_a_url_is_not_a_bot_signal() -> None:
    assert not BOTS.is_bot("GET", {"user-agent": "Advanced Browser (http://www.avantbrowser.com)"})
    assert BOTS.is_bot("GET", {"user-agent": "Mozilla/5.0 (compatible; MSIE 6.0; Windows NT 5.1; "
                                             "EmbeddedWB 14.52 from: http://www.bsalsa.com/; +http://example.com/bot)"})
