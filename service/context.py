"""What every handler needs, built once per process by the application's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.attribution import Clicks
from service.bots import Bots
from service.clicks import ClickLog
from service.codes import Signer
from service.devices import Devices
from service.pages import BuyerPages
from service.records import Records
from service.settings import Settings
from service.spool import Spool
from service.store import redis as keys
from service.urls import HostPolicy


@dataclass
class Context:
    settings: Settings
    pool: asyncpg.Pool
    redis: keys.Client
    signer: Signer
    hosts: HostPolicy
    records: Records
    devices: Devices
    bots: Bots
    spool: Spool
    click_log: ClickLog
    attribution: Clicks
    pages: BuyerPages

    def short_url(self, code: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}/e/{code}"
