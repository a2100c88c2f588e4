import json
from importlib import resources

import pytest

from service.pages import CODES, LANGUAGES, BuyerPages, language, messages, prefers_json, quality_values

FALLBACK = "https://www.aliexpress.com/"


def test_quality_values_best_first_ties_in_order() -> None:
    assert quality_values("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5") == [
        ("fr-ch", 1.0), ("fr", 0.9), ("en", 0.8), ("de", 0.7), ("*", 0.5)]
    assert quality_values("a;q=0.5, b, c;q=x, d;q=2") == [("b", 1.0), ("d", 1.0), ("a", 0.5), ("c", 0.0)]
    assert quality_values("") == []


@pytest.mark.parametrize(("header", "chosen"), [
    ("", "en"),
    ("es-MX,es;q=0.9,en;q=0.8", "es"),
    ("de-CH;q=0.4, pt-BR;q=0.9", "pt"),
    ("sv-SE, nb;q=0.9, ru;q=0.5", "ru"),  # no Swedish or Norwegian: the next language we have
    ("sv, *;q=0.1", "en"),
    ("sv", "en"),
    ("ar-EG", "ar"),
    ("iw", "he"),  # the old tag for Hebrew
    ("in-ID", "id"),
    ("zh-Hant-TW,zh;q=0.9", "zh"),
    ("ja;q=0, ko", "ko"),  # q=0 means "not this one"
    ("ja;q=0", "en"),
    ("UK", "uk"),
])
def test_language_from_accept_language(header: str, chosen: str) -> None:
    assert language(header) == chosen


def test_prefers_json() -> None:
    assert prefers_json("application/json")
    assert not prefers_json("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert prefers_json("text/html;q=0.5, application/json")
    assert not prefers_json("application/json;q=0")
    assert not prefers_json("")


def test_every_language_has_every_message() -> None:
    files = {entry.name for entry in resources.files("service").joinpath("messages").iterdir()}
    assert files == {f"{lang}.json" for lang in LANGUAGES}
    english = messages("en")
    for lang in LANGUAGES:
        said = messages(lang)
        assert said.keys() == english.keys(), lang
        assert all(text.strip() for text in said.values()), lang
        if lang != "en":  # a language file that is English in disguise is a missing translation
            assert said["ERR_404"] != english["ERR_404"], lang


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pages_speak_their_language_with_a_way_onward(lang: str) -> None:
    pages = BuyerPages(FALLBACK)
    said = messages(lang)
    for code in CODES:
        page = pages.html[lang, code].decode()
        direction = "rtl" if lang in ("ar", "he") else "ltr"
        assert page.startswith(f"<!doctype html><html lang={lang} dir={direction}>")
        assert said[code].replace("'", "&#x27;") in page
        assert f'<a href="{FALLBACK}"' in page and said["onward"] in page
        assert f"<code>{code}</code>" in page
    assert json.loads(pages.json["ERR_404"]) == {
        "error": {"code": "ERR_404", "message": "This product is no longer available."}}


def test_fallback_url_is_escaped_in_the_page() -> None:
    page = BuyerPages("https://www.aliexpress.com/?a=1&b=\"2\"").html["en", "ERR_404"].decode()
    assert 'href="https://www.aliexpress.com/?a=1&amp;b=&quot;2&quot;"' in page
