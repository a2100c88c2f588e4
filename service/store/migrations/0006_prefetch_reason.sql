-- ERR_PREFETCH: a browser's speculative fetch, answered 503 so that the buyer's real click
-- reaches us; logged like every other request to /e/{code}, counted apart from bots.
ALTER TABLE clicks DROP CONSTRAINT IF EXISTS clicks_reason_check;
ALTER TABLE clicks ADD CONSTRAINT clicks_reason_check
    CHECK (reason IN ('ERR_400', 'ERR_403', 'ERR_404', 'ERR_410', 'ERR_PREFETCH', 'ERR_BOT', 'ERR_DUP'));
ALTER TABLE click_rollups ADD COLUMN "ERR_PREFETCH" bigint NOT NULL DEFAULT 0;
