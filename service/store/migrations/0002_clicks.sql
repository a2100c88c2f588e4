-- Every request to /e/{code}, as the writer drains it from the Redis click streams.
-- Partitioned by day so old days are dropped, not deleted; the default partition catches any
-- day whose partition does not exist yet, so no click is ever refused for want of one.
CREATE TABLE clicks (
    click_id           text NOT NULL,
    clicked_at         timestamptz NOT NULL,
    code               text NOT NULL,
    seller_id          text,
    product_id         text,
    reason             text CHECK (reason IN ('ERR_400', 'ERR_403', 'ERR_404', 'ERR_410', 'ERR_BOT', 'ERR_DUP')),
    device_hash        text NOT NULL,
    ip                 text NOT NULL,
    user_agent         text NOT NULL,
    referer            text NOT NULL,
    original_click_id  text,
    -- The click id carries its own time, so (click_id, clicked_at) finds the one partition.
    PRIMARY KEY (click_id, clicked_at)
) PARTITION BY RANGE (clicked_at);

CREATE TABLE clicks_default PARTITION OF clicks DEFAULT;

CREATE INDEX clicks_seller_time ON clicks (seller_id, clicked_at);
CREATE INDEX clicks_invalid ON clicks (seller_id, clicked_at DESC) WHERE reason IS NOT NULL;
