"""Who clicked: the client IP (trusting X-Forwarded-For only from our proxies), the device id
and its cookie."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

COOKIE = "mc_did"
COOKIE_MAX_AGE = 31536000
_DEVICE_RE = re.compile(r"[A-Za-z0-9_-]{22}")


class Devices:
    def __init__(self, trusted: Sequence[IPNetwork], secret: str, cookie_secure: bool) -> None:
        self.trusted = tuple(trusted)
        self.secret = secret.encode()
        attrs = f"Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax"
        self.cookie_attrs = attrs + ("; Secure" if cookie_secure else "")

    def _is_trusted(self, address: IPAddress) -> bool:
        return any(address in net for net in self.trusted)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The peer, or — when the peer is a trusted proxy — the first untrusted address in
        X-Forwarded-For walking from the right (each proxy appends whom it heard from)."""
        if not self.trusted or not forwarded_for:
            return peer
        try:
            current = ipaddress.ip_address(peer)
        except ValueError:
            return peer
        if not self._is_trusted(current):
            return peer
        for hop in reversed(forwarded_for.split(",")):
            try:
                current = ipaddress.ip_address(hop.strip())
            except ValueError:
                break  # a garbled hop: trust nothing to its left
            if not self._is_trusted(current):
                break
        return str(current)

    def device_id(self, cookie: str | None, ip: str, user_agent: str, accept_language: str) -> tuple[str, bool]:
        """(device id, whether the cookie must be set)."""
        if cookie is not None and _DEVICE_RE.fullmatch(cookie):
            return cookie, False
        mac = hmac.new(self.secret, f"{ip}\n{user_agent}\n{accept_language}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("="), True

    def cookie(self, device_id: str) -> str:
        return f"{COOKIE}={device_id}; {self.cookie_attrs}"


def device_hash(device_id: str) -> str:
    """What is stored: the device id itself never leaves the buyer's browser and our memory."""
    return hashlib.sha256(device_id.encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=65536)
def truncate_ip(ip: str) -> str:
    """/24 for IPv4, /48 for IPv6: enough to see a click farm, not enough to find a person."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
