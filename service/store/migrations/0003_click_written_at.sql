-- When the writer committed each click: click-to-Postgres lag is an operating figure, and an
-- auditor asking "when did you know about this click" gets an answer.
ALTER TABLE clicks ADD COLUMN written_at timestamptz NOT NULL DEFAULT clock_timestamp();
