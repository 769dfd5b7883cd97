-- How far the source has purged its change log: one row, the transaction id
-- below which changes may be gone. From it on the log is complete, so a
-- reader whose next window starts at or after it misses nothing; one whose
-- window starts below it (it lagged beyond its retention, or it is a copy or
-- a restored backup of a warehouse) must reload instead of applying a window
-- with holes. Written only by cdc.purge_consumed.

CREATE TABLE cdc.purge_horizon (
    singleton boolean PRIMARY KEY DEFAULT TRUE,
    horizon xid8 NOT NULL,
    purged_at timestamptz,
    CONSTRAINT purge_horizon_singleton_check CHECK (singleton)
);
COMMENT ON TABLE cdc.purge_horizon IS
'One row: how far cdc.purge_consumed has purged cdc.change_log. Changes of transactions below horizon may '
'be gone; every change from it on is still in the log.';
COMMENT ON COLUMN cdc.purge_horizon.horizon IS
'One past the newest transaction id whose changes were purged (0: nothing purged). A reader''s '
'window starting below it would miss changes.';
COMMENT ON COLUMN cdc.purge_horizon.purged_at IS
'When a purge last moved the horizon (NULL: not since this table was made).';

-- Before this table existed, purges deleted changes below the smallest
-- applied_xmin of the readers at the time, and positions only moved forward:
-- everything purged so far lies below today's smallest position. That is the
-- safe starting point (a reader still behind it was not protected).
INSERT INTO cdc.purge_horizon (horizon)
SELECT coalesce(min(c.applied_xmin), '0'::xid8) FROM cdc.consumer AS c;
