-- Hourly click counts per code, kept by the writer in the transaction that stores the clicks,
-- so traffic reports read a few rows per code and hour instead of every click. Hours (UTC)
-- line up with local midnights in every time zone whose offset is a whole number of hours;
-- reports for other zones (e.g. Asia/Kolkata) read the clicks themselves.
CREATE TABLE click_rollups (
    code          text NOT NULL,
    hour          timestamptz NOT NULL,
    seller_id     text,
    clicks        bigint NOT NULL,
    valid_clicks  bigint NOT NULL,
    "ERR_400"     bigint NOT NULL,
    "ERR_403"     bigint NOT NULL,
    "ERR_404"     bigint NOT NULL,
    "ERR_410"     bigint NOT NULL,
    "ERR_BOT"     bigint NOT NULL,
    "ERR_DUP"     bigint NOT NULL,
    PRIMARY KEY (code, hour)
);
CREATE INDEX click_rollups_seller_hour ON click_rollups (seller_id, hour);

INSERT INTO click_rollups
SELECT code, date_trunc('hour', clicked_at, 'UTC'), min(seller_id), count(*), count(*) FILTER (WHERE reason IS NULL),
       count(*) FILTER (WHERE reason = 'ERR_400'), count(*) FILTER (WHERE reason = 'ERR_403'),
       count(*) FILTER (WHERE reason = 'ERR_404'), count(*) FILTER (WHERE reason = 'ERR_410'),
       count(*) FILTER (WHERE reason = 'ERR_BOT'), count(*) FILTER (WHERE reason = 'ERR_DUP')
FROM clicks GROUP BY 1, 2;
