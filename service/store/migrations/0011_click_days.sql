-- Click counts per code over whole days of 24 hours, for every alignment to the hour: a row per
-- code and day start, where the day starts on any UTC hour (00:00, 01:00, ... 23:00). A local day
-- in a zone whose offset is a whole number of hours is one of these rows; a day in a half- or
-- quarter-hour zone (Asia/Kolkata) is one of them with a few quarter-hour rows taken off its start
-- and added at its end. So a 30-day report reads 30 rows per code instead of 720 hourly ones
-- (service/reports.py day_plan). A quarter hour's clicks count in the 24 days that hold it; the
-- writer keeps them in the transaction that stores the clicks, from the same counts as the others.
CREATE TABLE click_days (
    day_start       timestamptz NOT NULL,
    code            text NOT NULL,
    seller_id       text,
    clicks          bigint NOT NULL,
    valid_clicks    bigint NOT NULL,
    "ERR_400"       bigint NOT NULL,
    "ERR_403"       bigint NOT NULL,
    "ERR_404"       bigint NOT NULL,
    "ERR_410"       bigint NOT NULL,
    "ERR_PREFETCH"  bigint NOT NULL,
    "ERR_BOT"       bigint NOT NULL,
    "ERR_DUP"       bigint NOT NULL,
    PRIMARY KEY (day_start, code)
) WITH (fillfactor = 70);  -- counted into again and again through its day: room for updates in place
CREATE INDEX click_days_seller ON click_days (seller_id, day_start);

LOCK TABLE click_rollups_15m IN SHARE MODE;

INSERT INTO click_days
SELECT date_trunc('day', r.quarter - make_interval(hours => a), 'UTC') + make_interval(hours => a), r.code,
       min(r.seller_id), sum(r.clicks), sum(r.valid_clicks), sum(r."ERR_400"), sum(r."ERR_403"), sum(r."ERR_404"),
       sum(r."ERR_410"), sum(r."ERR_PREFETCH"), sum(r."ERR_BOT"), sum(r."ERR_DUP")
FROM click_rollups_15m r CROSS JOIN generate_series(0, 23) AS a
GROUP BY 1, 2;
