"""SQL for order events, orders and carts."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

Row = dict[str, Any]

# Orders and carts carry their click's audience dimensions (migration 0010). Copied from the
# click when it is stored already (the usual case: the writer is a second behind the redirect);
# else by the writer's sweep (fill_audience) once it is.
_DIMENSIONS = "via, country, device, browser, os, referrer"
_FROM_CLICK = f"""
UPDATE {{table}} t SET ({_DIMENSIONS}) = (c.via, c.country, c.device, c.browser, c.os, c.referrer)
FROM clicks c
WHERE {{where}} AND t.via IS NULL AND t.clicked_at IS NOT NULL
  AND c.click_id = t.click_id AND c.clicked_at = t.clicked_at AND c.via IS NOT NULL
"""
_AUDIENCE_OF_CLICK = _FROM_CLICK.replace("{where}", "t.{key} = $1")
_AUDIENCE_SINCE = _FROM_CLICK.replace("{where}", "t.clicked_at >= $1")


async def fill_audience(conn: asyncpg.Connection, since: datetime) -> int:
    """Orders and carts on clicks made since `since` that still lack their click's dimensions
    (the event came before the writer stored the click) get them; returns how many did."""
    filled = 0
    for table in ("orders", "carts"):
        status = await conn.execute(_AUDIENCE_SINCE.format(table=table), since)
        filled += int(status.split()[-1])
    return filled


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
    if inserted:
        await conn.execute(_AUDIENCE_OF_CLICK.format(table="orders", key="order_id"), order["order_id"])
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
    await conn.execute(_AUDIENCE_OF_CLICK.format(table="carts", key="event_id"), cart["event_id"])


async def rate_for(conn: asyncpg.Connection, category: str) -> Decimal | None:
    rate: Decimal | None = await conn.fetchval("SELECT rate FROM commission_rates WHERE category = $1", category)
    return rate
