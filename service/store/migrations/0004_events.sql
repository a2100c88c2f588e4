-- Order events, kept once per event_id with the answer first given (idempotent replays).
CREATE TABLE events (
    event_id     text PRIMARY KEY,
    type         text NOT NULL CHECK (type IN ('cart', 'order', 'payment', 'refund')),
    body_hash    bytea NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    order_id     text,
    click_id     text,
    amount       numeric,
    answer       jsonb NOT NULL
);
CREATE INDEX events_order ON events (order_id) WHERE order_id IS NOT NULL;

-- One row per order, attributed or not; the click's code, seller and time are copied in so a
-- report reads orders by their click's day without touching the clicks table.
CREATE TABLE orders (
    order_id            text PRIMARY KEY,
    event_id            text NOT NULL REFERENCES events (event_id),
    click_id            text NOT NULL,
    attributed          boolean NOT NULL,
    reason              text CHECK (reason IN ('ERR_NO_CLICK', 'ERR_INVALID_CLICK', 'ERR_WINDOW')),
    code                text,
    seller_id           text,
    clicked_at          timestamptz,
    occurred_at         timestamptz NOT NULL,
    amount              numeric NOT NULL CHECK (amount > 0),
    currency            char(3) NOT NULL,
    category            text NOT NULL,
    rate                numeric(6, 5) NOT NULL,
    refunded            numeric NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= amount),
    commission          numeric NOT NULL DEFAULT 0 CHECK (commission >= 0),
    commission_status   text NOT NULL CHECK (commission_status IN ('pending', 'payable', 'reversed')),
    paid_at             timestamptz
);
CREATE INDEX orders_seller_click_day ON orders (seller_id, clicked_at) WHERE attributed;

-- Carts count in the funnel when their click is valid and within the window.
CREATE TABLE carts (
    event_id     text PRIMARY KEY REFERENCES events (event_id),
    click_id     text NOT NULL,
    counted      boolean NOT NULL,
    code         text,
    seller_id    text,
    clicked_at   timestamptz,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX carts_seller_click_day ON carts (seller_id, clicked_at) WHERE counted;
