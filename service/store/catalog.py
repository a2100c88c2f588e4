"""SQL for sellers, seller keys, products, commission rates and codes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

Row = dict[str, Any]


async def upsert_seller(
    conn: asyncpg.Connection, seller_id: str, name: str, status: str, verified: bool, affiliate: bool
) -> tuple[Row, bool]:
    row = await conn.fetchrow(
        """
        INSERT INTO sellers (seller_id, name, status, verified, affiliate_enabled)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (seller_id) DO UPDATE SET
            name = EXCLUDED.name, status = EXCLUDED.status, verified = EXCLUDED.verified,
            affiliate_enabled = EXCLUDED.affiliate_enabled, updated_at = now()
        RETURNING *, (xmax = 0) AS inserted
        """,
        seller_id, name, status, verified, affiliate,
    )
    data = dict(row)
    return data, data.pop("inserted")


async def get_seller(conn: asyncpg.Connection, seller_id: str) -> Row | None:
    row = await conn.fetchrow("SELECT * FROM sellers WHERE seller_id = $1", seller_id)
    return dict(row) if row else None


async def add_seller_key(conn: asyncpg.Connection, seller_id: str, key_hash: bytes) -> None:
    await conn.execute("INSERT INTO seller_keys (key_hash, seller_id) VALUES ($1, $2)", key_hash, seller_id)


async def seller_of_key(conn: asyncpg.Connection, key_hash: bytes) -> str | None:
    value: str | None = await conn.fetchval("SELECT seller_id FROM seller_keys WHERE key_hash = $1", key_hash)
    return value


async def upsert_product(
    conn: asyncpg.Connection,
    product_id: str, seller_id: str, url: str, category: str, status: str, stock: int,
) -> tuple[Row, bool]:
    row = await conn.fetchrow(
        """
        INSERT INTO products (product_id, seller_id, url, category, status, stock)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (product_id) DO UPDATE SET
            seller_id = EXCLUDED.seller_id, url = EXCLUDED.url, category = EXCLUDED.category,
            status = EXCLUDED.status, stock = EXCLUDED.stock, updated_at = now()
        RETURNING *, (xmax = 0) AS inserted
        """,
        product_id, seller_id, url, category, status, stock,
    )
    data = dict(row)
    return data, data.pop("inserted")


async def get_product(conn: asyncpg.Connection, product_id: str) -> Row | None:
    row = await conn.fetchrow("SELECT * FROM products WHERE product_id = $1", product_id)
    return dict(row) if row else None


async def set_rate(conn: asyncpg.Connection, category: str, rate: Decimal) -> tuple[Row, bool]:
    row = await conn.fetchrow(
        """
        INSERT INTO commission_rates (category, rate) VALUES ($1, $2)
        ON CONFLICT (category) DO UPDATE SET rate = EXCLUDED.rate, updated_at = now()
        RETURNING category, rate, updated_at, (xmax = 0) AS inserted
        """,
        category, rate,
    )
    data = dict(row)
    return data, data.pop("inserted")


async def list_rates(conn: asyncpg.Connection) -> list[Row]:
    rows = await conn.fetch("SELECT category, rate, updated_at FROM commission_rates ORDER BY category")
    return [dict(r) for r in rows]


async def insert_code(conn: asyncpg.Connection, code: str, values: Row) -> Row | None:
    """The new code's row, or None when these values (or, rarely, this code) already exist."""
    row = await conn.fetchrow(
        """
        INSERT INTO codes (code, seller_id, product_id, utm_source, utm_medium, utm_campaign,
                           utm_content, utm_term, channel)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT DO NOTHING
        RETURNING *
        """,
        code, values["seller_id"], values["product_id"], values["utm_source"], values["utm_medium"],
        values["utm_campaign"], values["utm_content"], values["utm_term"], values["channel"],
    )
    return dict(row) if row else None


async def find_code_by_values(conn: asyncpg.Connection, values: Row) -> Row | None:
    row = await conn.fetchrow(
        """
        SELECT * FROM codes
        WHERE seller_id = $1 AND product_id = $2 AND utm_source = $3 AND utm_medium = $4
          AND utm_campaign = $5 AND utm_content = $6 AND coalesce(utm_term, '') = coalesce($7, '')
        """,
        values["seller_id"], values["product_id"], values["utm_source"], values["utm_medium"],
        values["utm_campaign"], values["utm_content"], values["utm_term"],
    )
    return dict(row) if row else None


async def get_code(conn: asyncpg.Connection, code: str) -> Row | None:
    row = await conn.fetchrow(
        "SELECT c.*, p.url AS product_url FROM codes c JOIN products p USING (product_id) WHERE code = $1", code
    )
    return dict(row) if row else None


async def list_codes(
    conn: asyncpg.Connection,
    seller_id: str | None, utm_campaign: str | None, channel: str | None,
    after: tuple[datetime, str] | None, limit: int,
) -> list[Row]:
    rows = await conn.fetch(
        """
        SELECT c.*, p.url AS product_url FROM codes c JOIN products p USING (product_id)
        WHERE ($1::text IS NULL OR c.seller_id = $1)
          AND ($2::text IS NULL OR utm_campaign = $2)
          AND ($3::text IS NULL OR channel = $3)
          AND ($4::timestamptz IS NULL OR (c.created_at, c.code) < ($4, $5))
        ORDER BY c.created_at DESC, c.code DESC
        LIMIT $6
        """,
        seller_id, utm_campaign, channel, after[0] if after else None, after[1] if after else None, limit,
    )
    return [dict(r) for r in rows]


async def set_code_active(conn: asyncpg.Connection, code: str, active: bool) -> Row | None:
    row = await conn.fetchrow(
        """
        WITH changed AS (
            UPDATE codes SET active = $2, updated_at = clock_timestamp() WHERE code = $1 RETURNING *
        )
        SELECT changed.*, p.url AS product_url FROM changed JOIN products p USING (product_id)
        """,
        code, active,
    )
    return dict(row) if row else None
