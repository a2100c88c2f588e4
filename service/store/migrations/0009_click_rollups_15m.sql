-- Quarter-hour click counts per code, next to the hourly ones. Every local midnight of every time
-- zone in use falls on a UTC quarter hour (offsets are multiples of 15 minutes), so a traffic
-- report in any zone is exact from rollups alone: hourly rows for the hours that lie inside one
-- local day, quarter rows for the hours that a local midnight cuts (Asia/Kolkata at :30,
-- Asia/Kathmandu at :15, ...). The writer keeps both in the transaction that stores the clicks;
-- an hourly row is always the sum of its hour's quarter rows. Raw clicks can then be dropped by
-- retention (whole days) with every report staying exact.
CREATE TABLE click_rollups_15m (
    code            text NOT NULL,
    quarter         timestamptz NOT NULL,  -- the quarter hour's start (UTC minute 0, 15, 30 or 45)
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
    -- time first: a report over every seller reads the few cut hours by time alone
    PRIMARY KEY (quarter, code)
);
CREATE INDEX click_rollups_15m_seller ON click_rollups_15m (seller_id, quarter);

-- The conversion runs with the clicks and hourly rollups held still (a writer still running the
-- old code waits, then goes on), so both tables are read at one moment. Clicks first: writers
-- take the clicks before the rollups, and the other order could deadlock with one.
LOCK TABLE clicks, click_rollups IN SHARE MODE;

-- Where the clicks themselves are kept, they are counted again: exact to the quarter hour.
INSERT INTO click_rollups_15m
SELECT code, date_bin('15 minutes', clicked_at, timestamptz '2000-01-01 00:00:00+00'), min(seller_id),
       count(*), count(*) FILTER (WHERE reason IS NULL),
       count(*) FILTER (WHERE reason = 'ERR_400'), count(*) FILTER (WHERE reason = 'ERR_403'),
       count(*) FILTER (WHERE reason = 'ERR_404'), count(*) FILTER (WHERE reason = 'ERR_410'),
       count(*) FILTER (WHERE reason = 'ERR_PREFETCH'), count(*) FILTER (WHERE reason = 'ERR_BOT'),
       count(*) FILTER (WHERE reason = 'ERR_DUP')
FROM clicks GROUP BY 1, 2;

-- An hour counted in click_rollups whose clicks are all gone cannot be split: its counts go whole
-- to its first quarter. Reports stay exact for it in every zone whose local midnight does not cut
-- that hour (all whole-hour zones; half- and quarter-hour zones except on the hour holding their
-- midnight, where the hour counts on the day it starts in).
INSERT INTO click_rollups_15m
SELECT r.code, r.hour, r.seller_id, r.clicks, r.valid_clicks, r."ERR_400", r."ERR_403", r."ERR_404", r."ERR_410",
       r."ERR_PREFETCH", r."ERR_BOT", r."ERR_DUP"
FROM click_rollups r
WHERE NOT EXISTS (SELECT FROM click_rollups_15m q
                  WHERE q.code = r.code AND date_trunc('hour', q.quarter, 'UTC') = r.hour);

-- Hourly rows are the sums of their quarters from now on (where the clicks are kept and an hourly
-- row had drifted from them, the clicks win).
INSERT INTO click_rollups (code, hour, seller_id, clicks, valid_clicks, "ERR_400", "ERR_403", "ERR_404", "ERR_410",
                           "ERR_PREFETCH", "ERR_BOT", "ERR_DUP")
SELECT code, date_trunc('hour', quarter, 'UTC'), min(seller_id), sum(clicks), sum(valid_clicks), sum("ERR_400"),
       sum("ERR_403"), sum("ERR_404"), sum("ERR_410"), sum("ERR_PREFETCH"), sum("ERR_BOT"), sum("ERR_DUP")
FROM click_rollups_15m GROUP BY 1, 2
ON CONFLICT (code, hour) DO UPDATE SET
    clicks = EXCLUDED.clicks, valid_clicks = EXCLUDED.valid_clicks, "ERR_400" = EXCLUDED."ERR_400",
    "ERR_403" = EXCLUDED."ERR_403", "ERR_404" = EXCLUDED."ERR_404", "ERR_410" = EXCLUDED."ERR_410",
    "ERR_PREFETCH" = EXCLUDED."ERR_PREFETCH", "ERR_BOT" = EXCLUDED."ERR_BOT", "ERR_DUP" = EXCLUDED."ERR_DUP"
WHERE (click_rollups.clicks, click_rollups.valid_clicks, click_rollups."ERR_400", click_rollups."ERR_403",
       click_rollups."ERR_404", click_rollups."ERR_410", click_rollups."ERR_PREFETCH", click_rollups."ERR_BOT",
       click_rollups."ERR_DUP")
   IS DISTINCT FROM (EXCLUDED.clicks, EXCLUDED.valid_clicks, EXCLUDED."ERR_400", EXCLUDED."ERR_403",
                     EXCLUDED."ERR_404", EXCLUDED."ERR_410", EXCLUDED."ERR_PREFETCH", EXCLUDED."ERR_BOT",
                     EXCLUDED."ERR_DUP");
