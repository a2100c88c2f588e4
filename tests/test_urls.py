import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.urls import HostPolicy, UrlError, landing_url, normalize_product_url

POLICY = HostPolicy(["aliexpress.com", "*.aliexpress.com"])


@pytest.mark.parametrize("url", [
    "https://aliexpress.com.evil.com/item/1.html",
    "https://evilaliexpress.com/item/1.html",
    "https://aliexpress.com@evil.com/",
    "https://user:pw@www.aliexpress.com/",
    "https://evil.com\\@www.aliexpress.com/",
    "https://evil.com\\.aliexpress.com/",
    "https://www.aliexpress.com:8443/",
    "http://www.aliexpress.com/",
    "javascript:alert(1)//www.aliexpress.com",
    "//www.aliexpress.com/",
    "https://127.0.0.1/",
    "https://[::1]/",
    "https://2130706433/",
    "https://0x7f.1/",
    "https://xn--liexpress-h9h.com/",  # punycode of a Cyrillic look-alike
    "https://аliexpress.com/",  # that look-alike itself
    "https://www.aliexpress.com /",
    "https://www.aliexpress.com\t/",
    "https://aliexpress.com./",
    "https://.aliexpress.com/",
    "https:///www.aliexpress.com/",
    "",
])
def test_look_alikes_and_tricks_are_refused(url: str) -> None:
    with pytest.raises(UrlError):
        normalize_product_url(url, POLICY)


@given(st.lists(st.booleans(), min_size=14, max_size=14), st.sampled_from(["aliexpress.com", "www.aliexpress.com",
                                                                        "m.aliexpress.com"]))
def test_valid_host_in_any_letter_case_is_accepted(upper: list[bool], host: str) -> None:
    mixed = "".join(c.upper() if u else c for c, u in zip(host, upper * 2, strict=False))
    url = normalize_product_url(f"https://{mixed}/item/1.html", POLICY)
    assert url == f"https://{host}/item/1.html"


@given(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True))
def test_hosts_that_merely_contain_the_domain_are_refused(label: str) -> None:
    for host in (f"{label}aliexpress.com", f"aliexpress.com.{label}", f"aliexpress.{label}.com"):
        if host in ("aliexpress.com",):
            continue
        with pytest.raises(UrlError):
            normalize_product_url(f"https://{host}/", POLICY)


def test_port_443_and_idna_hosts() -> None:
    assert normalize_product_url("https://www.aliexpress.com:443/x", POLICY) == "https://www.aliexpress.com/x"
    policy = HostPolicy(["bücher.example"])
    assert normalize_product_url("https://BÜCHER.example/", policy) == "https://xn--bcher-kva.example/"
    assert normalize_product_url("https://xn--bcher-kva.example/", policy) == "https://xn--bcher-kva.example/"


def test_apex_only_pattern_does_not_allow_subdomains() -> None:
    policy = HostPolicy(["example.com"])
    normalize_product_url("https://example.com/", policy)
    with pytest.raises(UrlError):
        normalize_product_url("https://www.example.com/", policy)


def test_landing_url_keeps_query_replaces_utm_fragment_last() -> None:
    url = "https://www.aliexpress.com/item/1.html?spm=x&utm_source=old&a=1#reviews"
    utm = {"utm_source": "ig", "utm_medium": "social", "utm_campaign": "c", "utm_content": "d", "utm_term": None}
    assert landing_url(url, utm) == (
        "https://www.aliexpress.com/item/1.html?spm=x&a=1&utm_source=ig&utm_medium=social&utm_campaign=c"
        "&utm_content=d#reviews"
    )


def test_non_ascii_is_percent_encoded_and_bare_flags_are_kept() -> None:
    url = normalize_product_url("https://www.aliexpress.com/item/товар?q=кот&flag#отзывы", POLICY)
    assert url.isascii()
    assert url == ("https://www.aliexpress.com/item/%D1%82%D0%BE%D0%B2%D0%B0%D1%80?q=%D0%BA%D0%BE%D1%82&flag"
                   "#%D0%BE%D1%82%D0%B7%D1%8B%D0%B2%D1%8B")
    utm = {"utm_source": "ig", "utm_medium": "m", "utm_campaign": "c", "utm_content": "d", "utm_term": None}
    assert landing_url(url, utm).startswith(
        "https://www.aliexpress.com/item/%D1%82%D0%BE%D0%B2%D0%B0%D1%80?q=%D0%BA%D0%BE%D1%82&flag&utm_source=ig")
