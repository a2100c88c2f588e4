"""Who clicked: the audience dimensions of a click, judged once by the writer, never on the
buyer's path.

- country: ISO 3166-1 alpha-2 of the stored /24 (or /48), from the regional internet registries'
  delegation data that the `iptocc` wheel embeds (refreshed with each release; a block's country
  is the one it was assigned to, which agrees with commercial databases for ~95% of addresses).
- device, browser, os: from the User-Agent by ua-parser (uap-core's rules, with its Rust engine).
- referrer: the Referer's host in lower case, or `direct`.
- via: `qr` for a click on the code's QR code, `link` otherwise (the redirect knows it).
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

import iptocc
from ua_parser import parse

DIMENSIONS = ("country", "device", "browser", "os", "referrer", "via")
# What a click stored before dimensions were judged counts as (its referrer and via are known).
UNKNOWN = {"country": "ZZ", "device": "other", "browser": "Other", "os": "Other", "referrer": "direct",
           "via": "link"}
VIA = ("link", "qr")
MAX_VALUE = 100  # families are short; a longer one is somebody's garbage
# A family comes from the User-Agent a client chose: no control character or backslash is kept.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\\]+")
# A host as it may be counted (urlsplit gives it in lower case; IPv6 keeps its colons); anything
# else in a Referer's host part (a space, '=', quotes) is not a host, and counts as direct.
_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.:-]*[a-z0-9_])?")

# OS families whose devices are desktops or laptops (ua-parser's names).
_DESKTOP_OS = frozenset({
    "Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian", "FreeBSD", "OpenBSD",
    "NetBSD", "Red Hat", "SUSE", "Mint", "Arch Linux", "Gentoo", "Solaris", "Windows XP", "Windows 7",
})
_MOBILE_OS = frozenset({
    "iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "Symbian OS", "Tizen",
    "HarmonyOS", "Sailfish",
})


@functools.lru_cache(maxsize=65_536)
def country(ip: str) -> str:
    try:
        found = iptocc.country_code(ip) if ip else None
    except (ValueError, TypeError):
        found = None
    return found if isinstance(found, str) and len(found) == 2 and found.isalpha() else "ZZ"


def _device(user_agent: str, os: str, device_family: str, brand: str) -> str:
    if device_family == "Spider":
        return "other"
    if "iPad" in device_family or "Tablet" in device_family or "Tablet" in brand or "Kindle" in device_family:
        return "tablet"
    if os == "Android":  # Android phones say "Mobile"; tablets do not (Google's own advice to browsers)
        return "mobile" if "Mobile" in user_agent else "tablet"
    if os in _MOBILE_OS:
        return "mobile"
    if os in _DESKTOP_OS:
        return "desktop"
    return "other"


@functools.lru_cache(maxsize=65_536)
def agent(user_agent: str) -> tuple[str, str, str]:
    """(device, browser, os) of a User-Agent; unknown parts are `other` / `Other`."""
    if not user_agent.strip():
        return "other", "Other", "Other"
    result = parse(user_agent)
    browser = _family(result.user_agent.family if result.user_agent else None)
    os = _family(result.os.family if result.os else None)
    device = result.device
    kind = _device(user_agent, os, (device.family or "") if device else "", (device.brand or "") if device else "")
    return kind, browser, os


def _family(name: str | None) -> str:
    return _UNPRINTABLE.sub(" ", name or "").strip()[:MAX_VALUE] or "Other"


def referrer(referer: str) -> str:
    try:
        host = urlsplit(referer.strip()).hostname if referer else None
    except ValueError:
        host = None
    return host if host and len(host) <= MAX_VALUE and _HOST.fullmatch(host) else "direct"


def judge(ip: str, user_agent: str, referer: str, via: str) -> tuple[str, str, str, str, str, str]:
    """The click's values, in the order of DIMENSIONS."""
    device, browser, os = agent(user_agent)
    return country(ip), device, browser, os, referrer(referer), via if via in VIA else "link"
