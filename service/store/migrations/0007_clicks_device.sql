-- The writer judges repeats with Postgres as the last word (service/dedup.py): per batch it reads
-- the valid clicks and repeats of the batch's devices on its codes around the batch's times.
CREATE INDEX clicks_device ON clicks (code, device_hash, clicked_at) WHERE reason IS NULL OR reason = 'ERR_DUP';
