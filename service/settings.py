"""Every MCODE_* setting, in one frozen object built once and passed explicitly."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.urls import HostPolicy, UrlError, normalize_product_url

# Shipped so that `MCODE_ENV=dev` works out of the box; refused anywhere else.
DEV_SIGNING_KEY = "dev-signing-key-change-me"
DEV_EVENT_SECRET = "dev-event-secret-change-me"  # noqa: S105
DEV_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105
DEV_VALUES = {DEV_SIGNING_KEY, DEV_EVENT_SECRET, DEV_ADMIN_TOKEN}

CommaList = Annotated[tuple[str, ...], NoDecode]


class SettingsError(ValueError):
    """The environment describes a service that must not start."""


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MCODE_", env_file=".env", extra="ignore", frozen=True
    )

    env: str = "prod"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/mcode"
    redis_url: str = "redis://127.0.0.1:6379/0"
    public_url: str = "http://127.0.0.1:8000"

    admin_tokens: CommaList = (DEV_ADMIN_TOKEN,)
    signing_keys: CommaList = (DEV_SIGNING_KEY,)
    event_secrets: CommaList = (DEV_EVENT_SECRET,)

    allowed_hosts: CommaList = ("aliexpress.com", "*.aliexpress.com")
    default_commission_rate: Decimal = Decimal("0.05")
    cookie_secure: bool = True
    trusted_proxies: CommaList = ()
    dedup_window_s: int = Field(default=3600, gt=0)
    attribution_window_s: int = Field(default=1800, gt=0)
    # An order or cart stamped up to this long before its click is still attributed.
    clock_skew_s: int = Field(default=60, ge=0)
    # Where a buyer's error page leads onward; held to the product URL rules.
    fallback_url: str = "https://www.aliexpress.com/"
    embedded_writer: bool = True
    # Click streams (shards of the click log), spread over Redis Cluster's slots by hash tag;
    # every writer reads every one through one consumer group.
    click_streams: int = Field(default=16, ge=1, le=1024)
    # Raw clicks older than this are dropped a whole day partition at a time (rollups stay).
    click_retention_days: int = Field(default=400, ge=1)

    # How long a worker trusts its in-process copy of a code, seller or product;
    # the SPEC promises changes reach redirects within 5 s.
    cache_ttl_s: float = Field(default=2.0, ge=0, le=5)
    # Largest request body accepted on JSON endpoints and on the bulk CSV upload.
    max_json_bytes: int = Field(default=64 * 1024, gt=0)
    max_csv_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # A key prefix, so that several deployments (or test runs) can share one Redis.
    redis_prefix: str = "mc:"
    # Where answered clicks wait, fsynced, while Redis is unreachable; it must outlive a reboot.
    spool_dir: str = "/var/tmp/mcode-spool"  # noqa: S108 (a fixed, documented place; files are 0600)

    @field_validator(
        "admin_tokens", "signing_keys", "event_secrets", "allowed_hosts", "trusted_proxies", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("default_commission_rate")
    @classmethod
    def _rate(cls, value: Decimal) -> Decimal:
        if not Decimal(0) <= value <= Decimal(1):
            raise ValueError("must be between 0 and 1")
        if -value.as_tuple().exponent > 5:  # type: ignore[operator]
            raise ValueError("at most 5 decimal places (as stored with each order)")
        return value

    @field_validator("fallback_url")
    @classmethod
    def _fallback_is_a_product_url(cls, value: str, info: ValidationInfo) -> str:
        try:
            return normalize_product_url(value, HostPolicy(info.data.get("allowed_hosts", ())))
        except UrlError as exc:
            raise ValueError(f"MCODE_FALLBACK_URL is held to the product URL rules ({exc}); "
                             "set it to a page on one of MCODE_ALLOWED_HOSTS") from None

    @model_validator(mode="after")
    def _no_dev_secrets_in_production(self) -> Settings:
        if self.env == "dev":
            return self
        for name in ("signing_keys", "event_secrets", "admin_tokens"):
            values: tuple[str, ...] = getattr(self, name)
            if not values:
                raise SettingsError(f"MCODE_{name.upper()} is empty; set it (or MCODE_ENV=dev)")
            if DEV_VALUES.intersection(values):
                raise SettingsError(
                    f"MCODE_{name.upper()} holds the shipped development value; "
                    "set a secret of your own (or MCODE_ENV=dev)"
                )
            if any(len(v) < 16 for v in values):
                raise SettingsError(f"MCODE_{name.upper()}: every value needs at least 16 characters")
        return self

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)


def describe(exc: ValidationError) -> str:
    """What is wrong with the environment, in one line: `MCODE_NAME: why; ...`."""
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        name = f"MCODE_{str(error['loc'][0]).upper()}" if error["loc"] else ""
        problems.append(f"{name}: {message}" if name and name not in message else message)
    return "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
