-- View: etl.v_freshness
--     The warehouse's freshness for a monitor, in one row: see
--     etl.freshness(). In etl, not dwh: it exposes the pipeline's state and
--     reads the source, which b2b_reader may not; a DBA's monitor reads it
--     as the owner (or a role the DBA grants SELECT).
-- Columns:
--     lag      - age of the oldest committed source change not applied yet
--                (by the source's clock); 0 when every change is applied
--     max_lag  - etl.config max_freshness_lag
--     is_fresh - lag <= max_lag; NULL before the first applied snapshot
-- Tables: reads etl.run, etl.config, src.change_log, src.source_snapshot.
CREATE OR REPLACE VIEW etl.v_freshness AS
SELECT
    f.applied_run_id,
    f.applied_snapshot_at,
    f.unapplied_changes,
    f.oldest_unapplied_at,
    f.newest_unapplied_at,
    f.source_replaced,
    f.source_now,
    f.lag,
    f.max_lag,
    f.is_fresh
FROM etl.freshness() AS f;

COMMENT ON VIEW etl.v_freshness IS
'One row: how far the warehouse is behind its source. lag is the age of the oldest committed source '
'change the last applied snapshot did not see (0 when none); is_fresh is lag <= etl.config '
'max_freshness_lag (NULL before the first applied snapshot).';
