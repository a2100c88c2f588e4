import ipaddress

import httpx
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.devices import Devices, device_hash, truncate_ip
from tests.conftest import Maker, drain, make_settings, stored_click
from tests.test_redirect import BUYER, click_id_of

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def test_client_ip_believes_forwarded_for_only_from_trusted_proxies() -> None:
    d = Devices(TRUSTED, "secret", True)
    assert d.client_ip("203.0.113.9", "1.2.3.4") == "203.0.113.9"  # untrusted peer: header ignored
    assert d.client_ip("10.0.0.2", "198.51.100.7") == "198.51.100.7"
    # walking from the right, skipping our own proxies; a spoofed left part is not believed
    assert d.client_ip("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.1.1.1") == "198.51.100.7"
    assert d.client_ip("10.0.0.2", "10.9.9.9, 10.1.1.1") == "10.9.9.9"
    assert d.client_ip("10.0.0.2", "garbage, 198.51.100.7") == "198.51.100.7"
    assert d.client_ip("10.0.0.2", "198.51.100.7, garbage") == "10.0.0.2"
    assert d.client_ip("fd00::1", "2001:db8::5") == "2001:db8::5"
    assert Devices([], "s", True).client_ip("10.0.0.2", "198.51.100.7") == "10.0.0.2"


def test_device_id_from_cookie_or_derived() -> None:
    d = Devices([], "secret", True)
    derived, must_set = d.device_id(None, "1.2.3.4", "UA", "en")
    assert must_set and len(derived) == 22
    assert d.device_id(derived, "9.9.9.9", "other", "fr") == (derived, False)
    assert d.device_id(None, "1.2.3.4", "UA", "en")[0] == derived
    assert d.device_id(None, "1.2.3.5", "UA", "en")[0] != derived
    assert d.device_id("bad cookie", "1.2.3.4", "UA", "en") == (derived, True)
    assert device_hash(derived) != derived
    assert "Secure" not in Devices([], "s", False).cookie("x")


def test_truncate_ip() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:1234:5678::1") == "2001:db8:1234::"
    assert truncate_ip("::ffff:203.0.113.77") == "203.0.113.0"
    assert truncate_ip("not-an-ip") == ""


async def test_dedup_through_trusted_and_untrusted_proxies(code: Maker) -> None:
    app = create_app(make_settings(trusted_proxies=("10.0.0.0/8",)))
    async with LifespanManager(app):
        c = await code()
        url = f"/e/{c['code']}"

        async def click(peer: str, xff: str) -> str:
            transport = httpx.ASGITransport(app=app, client=(peer, 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as cl:
                return click_id_of(await cl.get(url, headers=BUYER | {"x-forwarded-for": xff}))

        # behind our proxy: two buyers with different addresses are two devices
        a = await click("10.0.0.2", "198.51.100.1")
        b = await click("10.0.0.2", "198.51.100.2")
        assert a != b
        assert await click("10.0.0.3", "198.51.100.1") == a  # the same buyer via another proxy
        # from outside, X-Forwarded-For is ignored: varying it does not make new devices
        x = await click("203.0.113.5", "1.1.1.1")
        assert await click("203.0.113.5", "2.2.2.2") == x
        await drain(app)
        row = await stored_click(app, b)
        assert row is not None and row["ip"] == "198.51.100.0"

