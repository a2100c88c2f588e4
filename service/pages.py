"""The pages a buyer sees when a link leads nowhere: in the buyer's language, built once.

Every page (language x error code) and every JSON answer is rendered at start; a refusal on the
hot path is two dictionary look-ups, the language choice cached per Accept-Language header.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Mapping
from importlib import resources

from starlette.types import Send

from service.errors import STATUS

# One file of messages per language in service/messages/; English is the default.
LANGUAGES = (
    "en", "es", "pt", "fr", "de", "it", "nl", "pl", "ru", "uk", "tr", "ar", "he", "ko", "ja", "zh", "vi", "th", "id",
)
RIGHT_TO_LEFT = frozenset({"ar", "he"})
# Older tags that browsers still send for the same languages.
ALIASES = {"iw": "he", "in": "id"}
CODES = ("ERR_400", "ERR_403", "ERR_404", "ERR_410", "ERR_500", "ERR_503")
DEFAULT = "en"


def quality_values(header: str) -> list[tuple[str, float]]:
    """The items of an Accept-style header with their weights, best first (ties keep their order);
    an unreadable weight counts as 0."""
    items: list[tuple[str, float]] = []
    for part in header.split(","):
        item, _, params = part.partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if item := item.strip().lower():
            items.append((item, q))
    return sorted(items, key=lambda pair: -pair[1])


@functools.lru_cache(maxsize=4096)
def prefers_json(accept: str) -> bool:
    """True when an Accept header ranks application/json above text/html."""
    best_json = best_html = -1.0
    for media, q in quality_values(accept):
        if media == "application/json":
            best_json = max(best_json, q)
        elif media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, q)
    return best_json > 0 and best_json > best_html


@functools.lru_cache(maxsize=4096)
def language(accept_language: str) -> str:
    """The buyer's most wanted language that we have (by primary subtag), else English."""
    for tag, q in quality_values(accept_language):
        if q <= 0:
            break
        primary = tag.split("-", 1)[0]
        primary = ALIASES.get(primary, primary)
        if primary in LANGUAGES:
            return primary
        if primary == "*":
            return DEFAULT
    return DEFAULT


def messages(lang: str) -> dict[str, str]:
    text = resources.files("service").joinpath("messages", f"{lang}.json").read_text(encoding="utf-8")
    loaded: dict[str, str] = json.loads(text)
    return loaded


def _page(lang: str, code: str, sentence: str, onward: str, fallback_url: str) -> bytes:
    direction = "rtl" if lang in RIGHT_TO_LEFT else "ltr"
    return (
        f"<!doctype html><html lang={lang} dir={direction}><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{code}</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;"
        "line-height:1.5'>"
        f"<h1 style='font-size:1.4rem'>{html.escape(sentence)}</h1>"
        f"<p><a href=\"{html.escape(fallback_url)}\" style='font-size:1.1rem'>{html.escape(onward)}</a></p>"
        f"<p style='color:#555'><code>{code}</code></p></body></html>"
    ).encode()


class BuyerPages:
    def __init__(self, fallback_url: str) -> None:
        self.html: dict[tuple[str, str], bytes] = {}
        self.sentences = messages(DEFAULT)
        for lang in LANGUAGES:
            said = messages(lang)
            missing = set(CODES) - said.keys()
            if missing:  # a language file that lost a message must not fail one buyer at a time
                raise ValueError(f"service/messages/{lang}.json lacks {sorted(missing)}")
            for code in CODES:
                self.html[lang, code] = _page(lang, code, said[code], said["onward"], fallback_url)
        self.json = {
            code: json.dumps({"error": {"code": code, "message": self.sentences[code]}}).encode() for code in CODES
        }

    async def send(self, send: Send, headers: Mapping[str, str], code: str) -> None:
        """The refusal `code` as the request's Accept and Accept-Language headers want it."""
        if prefers_json(headers.get("accept", "")):
            body = self.json[code]
            kind = [(b"content-type", b"application/json")]
        else:
            lang = language(headers.get("accept-language", ""))
            body = self.html[lang, code]
            kind = [(b"content-type", b"text/html; charset=utf-8"), (b"content-language", lang.encode())]
        await send({"type": "http.response.start", "status": STATUS[code], "headers": [
            *kind, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
            (b"vary", b"Accept, Accept-Language"),
        ]})
        await send({"type": "http.response.body", "body": body})
