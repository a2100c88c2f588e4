"""Product URLs: which are allowed as redirect targets, and how a landing URL is composed (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote_plus, urlencode, urlsplit, urlunsplit

import idna

from service.codes import UTM_FIELDS

CLICK_PARAM = "mc_click"
# Characters left as they are when percent-encoding a product URL (RFC 3986 reserved, unreserved, %).
_URL_SAFE = "/:@!$&'()*+,;=?-._~%"
_OVERRIDDEN = frozenset((*UTM_FIELDS, CLICK_PARAM))
# Characters that browsers or parsers read differently from urllib: refuse them outright.
_AMBIGUOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


class UrlError(ValueError):
    pass


def ascii_host(host: str) -> str:
    """The lower-case A-label form of a host name, or UrlError."""
    if not host or host.endswith(".") or ".." in host:
        raise UrlError("host is not a valid domain name")
    try:
        return idna.encode(host, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise UrlError(f"host is not a valid domain name ({exc})") from None


class HostPolicy:
    """`example.com` allows that host exactly; `*.example.com` allows any subdomain of it."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for pattern in patterns:
            if pattern.startswith("*."):
                self.suffixes.append("." + ascii_host(pattern[2:]))
            else:
                self.exact.add(ascii_host(pattern))

    def allows(self, host: str) -> bool:
        return host in self.exact or any(host.endswith(s) for s in self.suffixes)


def _is_ip_literal(host: str) -> bool:
    if host.startswith("["):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    # inet_aton also accepts forms like 2130706433 or 0x7f.1: a numeric last label is never a domain.
    return bool(_NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]))


def normalize_product_url(url: str, policy: HostPolicy) -> str:
    """The URL with its host in A-label form, or UrlError saying why it may not be a target."""
    if len(url) > 2048:
        raise UrlError("at most 2048 characters")
    if _AMBIGUOUS.search(url):
        raise UrlError("must not contain backslashes, spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise UrlError("must be an https URL")
    netloc = parts.netloc
    if "@" in netloc:
        raise UrlError("must not contain user information")
    try:
        port = parts.port
    except ValueError:
        raise UrlError("port is not valid") from None
    if port is not None and port != 443:
        raise UrlError("port must be 443 or absent")
    raw_host = parts.hostname or ""
    if not raw_host or _is_ip_literal(raw_host):
        raise UrlError("host must be a domain name, not an IP address")
    host = ascii_host(raw_host)
    if _is_ip_literal(host):
        raise UrlError("host must be a domain name, not an IP address")
    if not policy.allows(host):
        raise UrlError(f"host '{host}' is not in MCODE_ALLOWED_HOSTS")
    # Location headers are ASCII: anything else is percent-encoded once, here.
    return urlunsplit((
        "https", host, quote(parts.path or "/", safe=_URL_SAFE), quote(parts.query, safe=_URL_SAFE),
        quote(parts.fragment, safe=_URL_SAFE),
    ))


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def landing_parts(url: str, utm: dict[str, str | None]) -> tuple[str, str]:
    """Split a landing URL around the click id: (everything up to `mc_click=`, fragment).

    The product's own query is kept, the code's UTM values replace any already there,
    and the fragment stays last.
    """
    parts = urlsplit(url)
    # The product's own parameters stay exactly as written (a bare `flag`, its own escapes).
    kept = [p for p in parts.query.split("&") if p and unquote_plus(p.split("=", 1)[0]) not in _OVERRIDDEN]
    ours = urlencode([(k, v) for k in UTM_FIELDS if (v := utm.get(k))])
    head = urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join([*kept, ours]), ""))
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{head}&{CLICK_PARAM}=", fragment


def landing_url(url: str, utm: dict[str, str | None]) -> str:
    """The landing URL as shown to a seller: UTM values in place, no click id yet."""
    head, fragment = landing_parts(url, utm)
    return head[: -len(f"&{CLICK_PARAM}=")] + fragment
