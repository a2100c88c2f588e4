"""SQL for order events, orders and carts."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

Row = dict[str, Any]


async def claim_event(
    conn: asyncpg.Connection, event_id: str, type_: str, body_hash: bytes, occurred_at: datetime
) -> bool:
    """True when this event id is new. A concurrent twin waits here until the first commits."""
    inserted = await conn.fetchval(
        """
        INSERT INTO events (event_id, type, body_hash, occurred_at, answer) VALUES ($1, $2, $3, $4, '{}')
        ON CONFLICT (event_id) DO NOTHING RETURNING true
        """,
        event_id, type_, body_hash, occurred_at,
    )
    return bool(inserted)


async def stored_event(conn: asyncpg.Connection, event_id: str) -> tuple[bytes, dict[str, Any]]:
    row = await conn.fetchrow("SELECT body_hash, answer FROM events WHERE event_id = $1", event_id)
    return bytes(row["body_hash"]), json.loads(row["answer"])


async def save_answer(
    conn: asyncpg.Connection, event_id: str, answer: dict[str, Any], order_id: str | None,
    click_id: str | None, amount: Decimal | None,
) -> None:
    await conn.execute(
        "UPDATE events SET answer = $2::jsonb, order_id = $3, click_id = $4, amount = $5 WHERE event_id = $1",
        event_id, json.dumps(answer), order_id, click_id, amount,
    )


async def insert_order(conn: asyncpg.Connection, order: Row) -> bool:
    """False when the order id is taken."""
    columns = list(order)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    inserted = await conn.fetchval(
        f"INSERT INTO orders ({', '.join(columns)}) VALUES ({placeholders}) "
        "ON CONFLICT (order_id) DO NOTHING RETURNING true",
        *order.values(),
    )
    return bool(inserted)


async def lock_order(conn: asyncpg.Connection, order_id: str) -> Row | None:
    row = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1 FOR UPDATE", order_id)
    return dict(row) if row else None


async def update_order(conn: asyncpg.Connection, order_id: str, changes: Row) -> None:
    sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    await conn.execute(f"UPDATE orders SET {sets} WHERE order_id = $1", order_id, *changes.values())


async def insert_cart(conn: asyncpg.Connection, cart: Row) -> None:
    columns = list(cart)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await conn.execute(f"INSERT INTO carts ({', '.join(columns)}) VALUES ({placeholders})", *cart.values())


async def rate_for(conn: asyncpg.Connection, category: str) -> Decimal | None:
    rate: Decimal | None = await conn.fetchval("SELECT rate FROM commission_rates WHERE category = $1", category)
    return rate
