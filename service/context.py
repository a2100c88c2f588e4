"""What every handler needs, built once per process by the application's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from service.codes import Signer
from service.settings import Settings
from service.urls import HostPolicy


@dataclass
class Context:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    signer: Signer
    hosts: HostPolicy

    def short_url(self, code: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}/e/{code}"
