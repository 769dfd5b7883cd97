-- Function: etl.freshness() RETURNS TABLE (...)
--     How far the warehouse is behind its source, in one row. The warehouse
--     holds the source as seen by the last applied snapshot (etl.run with
--     window_applied); every committed source change that snapshot did not
--     see is waiting. The lag is the age, by the source's clock, of the
--     oldest such change (zero when none waits): it keeps growing while
--     nothing is applied, so a stopped pipeline is noticed even when the
--     source is quiet afterwards. Stale when the lag exceeds
--     etl.config max_freshness_lag.
--     The window's lower bound goes to the source as a parameter (pushed down
--     by postgres_fdw, an index scan there); the snapshot visibility test runs
--     here on what comes back, the incremental update's own rule.
-- Returns: one row; applied_run_id, lag and is_fresh are NULL when no run
--     has applied a snapshot yet.
-- Tables: reads etl.run, etl.config, src.change_log, src.source_snapshot.
-- Raises: whatever the source raises when it cannot be read (the caller
--     reports the lag as unknown).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: read through etl.v_freshness.
CREATE OR REPLACE FUNCTION etl.freshness()
RETURNS TABLE (
    applied_run_id bigint,
    applied_snapshot_at timestamptz,
    unapplied_changes bigint,
    oldest_unapplied_at timestamptz,
    newest_unapplied_at timestamptz,
    source_replaced boolean,
    source_now timestamptz,
    lag interval,
    max_lag interval,
    is_fresh boolean
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_snapshot pg_snapshot;
    v_xmin xid8;
BEGIN
    max_lag := etl.config_value('max_freshness_lag')::interval;
    SELECT r.run_id, r.source_snapshot_at, r.source_snapshot
      INTO applied_run_id, applied_snapshot_at, v_snapshot
      FROM etl.run AS r
     WHERE r.window_applied
     ORDER BY r.run_id DESC
     LIMIT 1;
    SELECT s.taken_at INTO source_now FROM src.source_snapshot AS s;
    IF applied_run_id IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_xmin := pg_snapshot_xmin(v_snapshot);
    SELECT count(*), min(c.changed_at), max(c.changed_at), coalesce(bool_or(c.operation = 'T'), FALSE)
      INTO unapplied_changes, oldest_unapplied_at, newest_unapplied_at, source_replaced
      FROM src.change_log AS c
     WHERE c.txid >= v_xmin AND NOT pg_visible_in_snapshot(c.txid, v_snapshot);
    lag := coalesce(greatest(source_now - oldest_unapplied_at, interval '0'), interval '0');
    is_fresh := lag <= max_lag;
    RETURN NEXT;
END
$fn$;

COMMENT ON FUNCTION etl.freshness() IS
'The warehouse''s lag behind its source in one row: the age of the oldest committed source change the '
'last applied snapshot did not see (zero when none), against etl.config max_freshness_lag; '
'read it through etl.v_freshness.';
