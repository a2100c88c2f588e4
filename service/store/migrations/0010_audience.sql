-- Audience dimensions: judged once per click by the writer (service/audience.py), kept with the
-- click, and counted in rollups beside the click rollups, so that a report grouped by one of them
-- reads rollups in every time zone, also over days whose raw clicks retention dropped.
-- Clicks stored before this migration keep NULL here; reports count them as unknown
-- (service/audience.py UNKNOWN), except their referrer host, which SQL can read (below).
ALTER TABLE clicks
    ADD COLUMN via text,        -- 'qr' or 'link'
    ADD COLUMN country text,    -- ISO 3166-1 alpha-2 of the stored /24 or /48, 'ZZ' when unknown
    ADD COLUMN device text,     -- desktop, mobile, tablet or other
    ADD COLUMN browser text,    -- family, e.g. Chrome
    ADD COLUMN os text,         -- family, e.g. iOS
    ADD COLUMN referrer text;   -- the Referer's host in lower case, or 'direct'

-- Orders and carts carry their click's dimensions, so that they are reported by them without the
-- clicks (which retention drops). Filled from the click when it is stored: at once when the
-- event comes after the writer stored the click, else by the writer's sweep (see the index).
ALTER TABLE orders
    ADD COLUMN via text, ADD COLUMN country text, ADD COLUMN device text, ADD COLUMN browser text,
    ADD COLUMN os text, ADD COLUMN referrer text;
ALTER TABLE carts
    ADD COLUMN via text, ADD COLUMN country text, ADD COLUMN device text, ADD COLUMN browser text,
    ADD COLUMN os text, ADD COLUMN referrer text;
-- Only rows still waiting for their click's dimensions: the sweep reads a tiny index.
CREATE INDEX orders_without_audience ON orders (clicked_at) WHERE via IS NULL AND clicked_at IS NOT NULL;
CREATE INDEX carts_without_audience ON carts (clicked_at) WHERE via IS NULL AND clicked_at IS NOT NULL;

-- Counts per seller, bucket and one (dimension, value): the same buckets and counts as
-- click_rollups (hourly) and click_rollups_15m (quarter hours), for the same reasons. Per seller,
-- not per code: a seller's report by day and one dimension reads a row per hour and value however
-- many codes it has; per code they would cost more rows than the clicks (codes are many, and most
-- have a click or so per quarter hour). Clicks on unknown codes (no seller) are not here.
-- (fillfactor 70: a row is counted into again and again within its hour, and room left on its
-- page lets the update stay there without touching an index.)
CREATE TABLE seller_audience (
    seller_id       text NOT NULL,
    hour            timestamptz NOT NULL,
    dimension       text NOT NULL,
    value           text NOT NULL,
    clicks          bigint NOT NULL,
    valid_clicks    bigint NOT NULL,
    "ERR_400"       bigint NOT NULL,
    "ERR_403"       bigint NOT NULL,
    "ERR_404"       bigint NOT NULL,
    "ERR_410"       bigint NOT NULL,
    "ERR_PREFETCH"  bigint NOT NULL,
    "ERR_BOT"       bigint NOT NULL,
    "ERR_DUP"       bigint NOT NULL,
    PRIMARY KEY (seller_id, dimension, hour, value)
) WITH (fillfactor = 70);

CREATE TABLE seller_audience_15m (
    seller_id       text NOT NULL,
    quarter         timestamptz NOT NULL,
    dimension       text NOT NULL,
    value           text NOT NULL,
    clicks          bigint NOT NULL,
    valid_clicks    bigint NOT NULL,
    "ERR_400"       bigint NOT NULL,
    "ERR_403"       bigint NOT NULL,
    "ERR_404"       bigint NOT NULL,
    "ERR_410"       bigint NOT NULL,
    "ERR_PREFETCH"  bigint NOT NULL,
    "ERR_BOT"       bigint NOT NULL,
    "ERR_DUP"       bigint NOT NULL,
    PRIMARY KEY (seller_id, dimension, quarter, value)
) WITH (fillfactor = 70);

-- As in 0009: clicks and rollups held still while they are counted into the new tables.
LOCK TABLE clicks, click_rollups, click_rollups_15m, orders, carts IN SHARE MODE;

-- The clicks kept so far, as unknown but for their referrer host and via (every earlier click
-- was a plain link: the QR code came with this release).
INSERT INTO seller_audience_15m
SELECT seller_id, date_bin('15 minutes', clicked_at, timestamptz '2000-01-01 00:00:00+00'), a.dimension, a.value,
       count(*), count(*) FILTER (WHERE reason IS NULL),
       count(*) FILTER (WHERE reason = 'ERR_400'), count(*) FILTER (WHERE reason = 'ERR_403'),
       count(*) FILTER (WHERE reason = 'ERR_404'), count(*) FILTER (WHERE reason = 'ERR_410'),
       count(*) FILTER (WHERE reason = 'ERR_PREFETCH'), count(*) FILTER (WHERE reason = 'ERR_BOT'),
       count(*) FILTER (WHERE reason = 'ERR_DUP')
FROM clicks
CROSS JOIN LATERAL (VALUES
    ('via', 'link'), ('country', 'ZZ'), ('device', 'other'), ('browser', 'Other'), ('os', 'Other'),
    ('referrer', coalesce(lower(substring(referer from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)')),
                          'direct'))
) AS a(dimension, value)
WHERE seller_id IS NOT NULL
GROUP BY 1, 2, 3, 4;

-- Counted quarter hours whose clicks retention already dropped: every dimension unknown.
INSERT INTO seller_audience_15m
SELECT r.seller_id, r.quarter, a.dimension, a.value, sum(r.clicks), sum(r.valid_clicks), sum(r."ERR_400"),
       sum(r."ERR_403"), sum(r."ERR_404"), sum(r."ERR_410"), sum(r."ERR_PREFETCH"), sum(r."ERR_BOT"), sum(r."ERR_DUP")
FROM click_rollups_15m r
LEFT JOIN (SELECT DISTINCT code, date_bin('15 minutes', clicked_at, timestamptz '2000-01-01 00:00:00+00') AS quarter
           FROM clicks) AS kept ON kept.code = r.code AND kept.quarter = r.quarter
CROSS JOIN LATERAL (VALUES ('via', 'link'), ('country', 'ZZ'), ('device', 'other'), ('browser', 'Other'),
                           ('os', 'Other'), ('referrer', 'direct')) AS a(dimension, value)
WHERE r.seller_id IS NOT NULL AND kept.code IS NULL
GROUP BY 1, 2, 3, 4
ON CONFLICT (seller_id, dimension, quarter, value) DO UPDATE SET
    clicks = seller_audience_15m.clicks + EXCLUDED.clicks,
    valid_clicks = seller_audience_15m.valid_clicks + EXCLUDED.valid_clicks,
    "ERR_400" = seller_audience_15m."ERR_400" + EXCLUDED."ERR_400",
    "ERR_403" = seller_audience_15m."ERR_403" + EXCLUDED."ERR_403",
    "ERR_404" = seller_audience_15m."ERR_404" + EXCLUDED."ERR_404",
    "ERR_410" = seller_audience_15m."ERR_410" + EXCLUDED."ERR_410",
    "ERR_PREFETCH" = seller_audience_15m."ERR_PREFETCH" + EXCLUDED."ERR_PREFETCH",
    "ERR_BOT" = seller_audience_15m."ERR_BOT" + EXCLUDED."ERR_BOT",
    "ERR_DUP" = seller_audience_15m."ERR_DUP" + EXCLUDED."ERR_DUP";

INSERT INTO seller_audience
SELECT seller_id, date_trunc('hour', quarter, 'UTC'), dimension, value, sum(clicks), sum(valid_clicks),
       sum("ERR_400"), sum("ERR_403"), sum("ERR_404"), sum("ERR_410"), sum("ERR_PREFETCH"), sum("ERR_BOT"),
       sum("ERR_DUP")
FROM seller_audience_15m GROUP BY 1, 2, 3, 4;

-- Orders and carts so far: unknown like their clicks, but for the referrer host of a click still
-- kept (as the rollups above have it) and via. Those on no known click keep NULL (never reported
-- by a dimension: they are not attributed, and carts on no click are not counted).
UPDATE orders o SET via = 'link', country = 'ZZ', device = 'other', browser = 'Other', os = 'Other',
    referrer = coalesce((SELECT lower(substring(c.referer from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'))
                         FROM clicks c WHERE c.click_id = o.click_id AND c.clicked_at = o.clicked_at), 'direct')
WHERE o.clicked_at IS NOT NULL;
UPDATE carts o SET via = 'link', country = 'ZZ', device = 'other', browser = 'Other', os = 'Other',
    referrer = coalesce((SELECT lower(substring(c.referer from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'))
                         FROM clicks c WHERE c.click_id = o.click_id AND c.clicked_at = o.clicked_at), 'direct')
WHERE o.clicked_at IS NOT NULL;
