"""Marketing codes: mint, sign and verify (pure, no I/O); UTM rules, channels, campaign advice.

A code is ID_LEN random base62 characters followed by MAC_LEN characters of an HMAC over them.
Changing any character of the MAC part always fails verification; changing the id part
fails unless 62**-MAC_LEN luck strikes (about 1 in 5.7e10).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Sequence

ALPHABET = string.digits + string.ascii_letters
ID_LEN = 8
MAC_LEN = 6
CODE_LEN = ID_LEN + MAC_LEN
_BASE = len(ALPHABET)
_CODE_RE = re.compile(rf"[A-Za-z0-9]{{{CODE_LEN}}}")


def _mac(key: bytes, ident: str) -> str:
    digest = int.from_bytes(hmac.new(key, ident.encode(), hashlib.sha256).digest()[:8], "big")
    out = []
    for _ in range(MAC_LEN):
        digest, rem = divmod(digest, _BASE)
        out.append(ALPHABET[rem])
    return "".join(out)


class Signer:
    """Signs with the first key; verifies with any, so keys can be rotated."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = [k.encode() for k in keys]
        # The same few codes are clicked again and again: remember the ones that verified.
        self._verified: dict[str, None] = {}

    def mint(self) -> str:
        return self.sign("".join(secrets.choice(ALPHABET) for _ in range(ID_LEN)))

    def sign(self, ident: str) -> str:
        return ident + _mac(self._keys[0], ident)

    def verify(self, code: str) -> bool:
        if code in self._verified:
            return True
        if not _CODE_RE.fullmatch(code):
            return False
        ident, mac = code[:ID_LEN], code[ID_LEN:]
        if not any(hmac.compare_digest(_mac(key, ident), mac) for key in self._keys):
            return False
        if len(self._verified) >= 100_000:
            self._verified.clear()
        self._verified[code] = None
        return True


# --- UTM rules -------------------------------------------------------------------------

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
REQUIRED_UTM = UTM_FIELDS[:4]
UTM_MAX = {"utm_campaign": 50}
UTM_DEFAULT_MAX = 100
_PRINTABLE_NO_SPACE = re.compile(r"[\x21-\x7e]+")


def utm_problems(values: dict[str, object]) -> dict[str, str]:
    """Each bad UTM field mapped to why; empty when all are fine."""
    problems: dict[str, str] = {}
    for name in UTM_FIELDS:
        value = values.get(name)
        if value is None:
            if name in REQUIRED_UTM:
                problems[name] = "required"
            continue
        if not isinstance(value, str):
            problems[name] = "must be a string"
            continue
        limit = UTM_MAX.get(name, UTM_DEFAULT_MAX)
        if value == "":
            problems[name] = "required" if name in REQUIRED_UTM else "must not be empty; omit it instead"
        elif len(value) > limit:
            problems[name] = f"at most {limit} characters"
        elif not _PRINTABLE_NO_SPACE.fullmatch(value):
            problems[name] = "printable ASCII only, no spaces"
    return problems


# --- channels --------------------------------------------------------------------------

_CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "facebook": ("fb", "facebook.com", "meta", "fbads", "facebook_ads"),
    "instagram": ("ig", "insta", "instagram.com"),
    "tiktok": ("tt", "tiktok.com", "douyin"),
    "youtube": ("yt", "youtube.com", "youtu.be"),
    "vk": ("vkontakte", "vk.com"),
    "x": ("twitter", "twitter.com", "x.com", "tw"),
    "pinterest": ("pin", "pinterest.com"),
    "whatsapp": ("wa", "whatsapp.com"),
    "telegram": ("tg", "t.me", "telegram.org"),
    "email": ("e-mail", "mail", "newsletter", "edm"),
    "google": ("google.com", "gads", "adwords", "google_ads"),
    "bing": ("microsoft", "bing.com"),
    "snapchat": ("snap", "sc"),
    "linkedin": ("li", "linkedin.com"),
    "reddit": ("reddit.com",),
    "ok": ("odnoklassniki", "ok.ru"),
    "line": ("line.me",),
    "kakao": ("kakaotalk",),
    "wechat": ("weixin",),
    "weibo": (),
    "discord": (),
    "twitch": (),
    "sms": (),
    "affiliate": ("aff", "partner"),
    "kol": ("influencer", "blogger"),
}
CHANNELS: dict[str, str] = {}
for _canonical, _aliases in _CHANNEL_ALIASES.items():
    CHANNELS[_canonical] = _canonical
    for _alias in _aliases:
        CHANNELS[_alias] = _canonical


def channel_of(utm_source: str) -> str:
    return CHANNELS.get(utm_source.strip().lower(), "other")


# --- campaign advice -------------------------------------------------------------------

_CAMPAIGN_FORM = re.compile(r"(?P<channel>[a-z0-9]+)_(?P<year>20\d\d)(?P<month>\d\d)_(?P<theme>[a-z0-9_]+)")
_VAGUE = re.compile(
    r"(test|testing|promo|campaign|sale|temp|tmp|demo|default|new|asdf|qwerty|xxx|abc|foo|bar|utm|link)"
    r"[_-]?\d*",
    re.IGNORECASE,
)


def campaign_warnings(utm_campaign: str) -> list[str]:
    warnings: list[str] = []
    if _VAGUE.fullmatch(utm_campaign):
        warnings.append(
            f"utm_campaign '{utm_campaign}' is vague; name the channel, month and theme so the report reads itself"
        )
    match = _CAMPAIGN_FORM.fullmatch(utm_campaign)
    if match is None or not 1 <= int(match["month"]) <= 12:
        warnings.append(
            f"utm_campaign '{utm_campaign}' is not in the form channel_yyyymm_theme "
            "(e.g. ig_202405_kd_summer_sale)"
        )
    return warnings
