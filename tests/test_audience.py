import pytest

from service import audience

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 "
        "Mobile/15E148 Safari/604.1")
ANDROID_PHONE = ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/124.0.6367.82 Mobile Safari/537.36")
ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.0.0 Safari/537.36")
WINDOWS_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36")
MAC_FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:132.0) Gecko/20100101 Firefox/132.0"


@pytest.mark.parametrize(("user_agent", "expected"), [
    (WINDOWS_CHROME, ("desktop", "Chrome", "Windows")),
    (MAC_FIREFOX, ("desktop", "Firefox", "Mac OS X")),
    (IPHONE, ("mobile", "Mobile Safari", "iOS")),
    (IPAD, ("tablet", "Mobile Safari", "iOS")),
    (ANDROID_PHONE, ("mobile", "Chrome Mobile", "Android")),
    (ANDROID_TABLET, ("tablet", "Chrome", "Android")),
    ("Googlebot/2.1 (+http://www.google.com/bot.html)", ("other", "Googlebot", "Other")),
    ("curl/8.5.0", ("other", "curl", "Other")),
    ("", ("other", "Other", "Other")),
    ("\x00\xff garbage", ("other", "Other", "Other")),
    # a family is what the client wrote: control characters and backslashes never reach a column
    ("My\tApp\\1/1.2 CFNetwork/1410 Darwin/22.6.0", ("mobile", "My App 1", "iOS")),
])
def test_device_browser_and_os_from_the_user_agent(user_agent: str, expected: tuple[str, str, str]) -> None:
    assert audience.agent(user_agent) == expected


@pytest.mark.parametrize(("ip", "expected"), [
    ("1.1.1.0", "AU"), ("77.88.8.0", "RU"), ("2a02:6b8::", "RU"),  # stored /24 and /48, as devices.truncate_ip
    ("203.0.113.0", "ZZ"), ("10.1.2.0", "ZZ"), ("::", "ZZ"),  # documentation, private, unspecified
    ("", "ZZ"), ("not an address", "ZZ"),
])
def test_country_of_the_stored_network(ip: str, expected: str) -> None:
    assert audience.country(ip) == expected


@pytest.mark.parametrize(("referer", "expected"), [
    ("https://www.Instagram.com/p/abc?x=1", "www.instagram.com"),
    ("http://user:pw@l.facebook.com:8080/l.php", "l.facebook.com"),
    ("android-app://com.google.android.gm/", "com.google.android.gm"),
    ("", "direct"), ("not a url", "direct"), ("http://[::1", "direct"),
    # what is not a host name is not counted as one (nor reaches a spreadsheet as a formula)
    ("https://=1+2/", "direct"), ("http://+SUM(1)/", "direct"), ("http://a b/", "direct"),
    ("https://xn--e1afmkfd.xn--p1ai/x", "xn--e1afmkfd.xn--p1ai"),
])
def test_referrer_is_the_referers_host(referer: str, expected: str) -> None:
    assert audience.referrer(referer) == expected


def test_judge_gives_every_dimension_in_order() -> None:
    assert audience.judge("1.1.1.0", IPHONE, "https://t.co/x", "qr") == (
        "AU", "mobile", "Mobile Safari", "iOS", "t.co", "qr")
    assert audience.judge("", "", "", "anything else")[-1] == "link"
    assert tuple(audience.UNKNOWN) == audience.DIMENSIONS


def test_a_row_keeps_its_columns_whatever_the_client_sent() -> None:
    from service.clicks import Click, new_click_id, now_ms
    from service.writer import STORED_COLUMNS, with_audience

    at = now_ms()
    for user_agent in ("My\tApp/1.2 CFNetwork/1410 Darwin/22.6.0", "a\\b\nc", "\x01\x02"):
        row = with_audience(Click(new_click_id(at), at, "c", "s", "p", "", "d", "1.1.1.0", user_agent,
                                  "https://x/\t").row().encode())
        assert row.count(b"\t") + 1 == len(STORED_COLUMNS), user_agent
