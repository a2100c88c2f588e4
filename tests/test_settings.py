import pytest
from pydantic import ValidationError

from service.settings import DEV_SIGNING_KEY, Settings


def test_production_refuses_shipped_or_missing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MCODE_SIGNING_KEYS", "MCODE_EVENT_SECRETS", "MCODE_ADMIN_TOKENS", "MCODE_ENV"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="MCODE_SIGNING_KEYS"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("MCODE_SIGNING_KEYS", "a-real-signing-key-123456")
    monkeypatch.setenv("MCODE_EVENT_SECRETS", "")
    with pytest.raises(ValidationError, match="MCODE_EVENT_SECRETS is empty"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("MCODE_EVENT_SECRETS", "a-real-event-secret-123456,second-secret-0123456789")
    monkeypatch.setenv("MCODE_ADMIN_TOKENS", "short")
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("MCODE_ADMIN_TOKENS", "an-admin-token-0123456789")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.event_secrets == ("a-real-event-secret-123456", "second-secret-0123456789")


def test_dev_accepts_shipped_values_and_reads_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCODE_ENV", "dev")
    monkeypatch.setenv("MCODE_ALLOWED_HOSTS", "shop.example, *.shop.example")
    monkeypatch.setenv("MCODE_FALLBACK_URL", "https://WWW.Shop.Example/deals")
    monkeypatch.setenv("MCODE_TRUSTED_PROXIES", "10.0.0.0/8,::1/128")
    monkeypatch.setenv("MCODE_COOKIE_SECURE", "0")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.signing_keys == (DEV_SIGNING_KEY,)
    assert s.allowed_hosts == ("shop.example", "*.shop.example")
    assert s.cookie_secure is False
    assert s.dedup_window_s == 3600 and s.attribution_window_s == 1800 and s.clock_skew_s == 60
    assert s.fallback_url == "https://www.shop.example/deals"
    assert str(s.default_commission_rate) == "0.05"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCODE_ENV", "dev")
    monkeypatch.setenv("MCODE_TRUSTED_PROXIES", "not-a-cidr")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_env_file_is_read(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"  # type: ignore[operator]
    env.write_text("MCODE_ENV=dev\nMCODE_DEDUP_WINDOW_S=60\n")
    monkeypatch.delenv("MCODE_ENV", raising=False)
    s = Settings(_env_file=str(env))  # type: ignore[call-arg]
    assert s.dedup_window_s == 60


def test_default_rate_keeps_to_what_orders_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCODE_ENV", "dev")
    monkeypatch.setenv("MCODE_DEFAULT_COMMISSION_RATE", "0.123456")
    with pytest.raises(ValidationError, match="5 decimal places"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(("allowed", "fallback"), [
    ("shop.example", None),  # the default fallback's host is not allowed here: the operator must choose one
    ("aliexpress.com,*.aliexpress.com", "http://www.aliexpress.com/"),
    ("aliexpress.com,*.aliexpress.com", "https://evil.example/"),
])
def test_fallback_url_is_held_to_the_product_url_rules(
    monkeypatch: pytest.MonkeyPatch, allowed: str, fallback: str | None
) -> None:
    monkeypatch.setenv("MCODE_ENV", "dev")
    monkeypatch.setenv("MCODE_ALLOWED_HOSTS", allowed)
    if fallback is None:
        monkeypatch.delenv("MCODE_FALLBACK_URL", raising=False)
    else:
        monkeypatch.setenv("MCODE_FALLBACK_URL", fallback)
    with pytest.raises(ValidationError, match="MCODE_FALLBACK_URL"):
        Settings(_env_file=None)  # type: ignore[call-arg]
