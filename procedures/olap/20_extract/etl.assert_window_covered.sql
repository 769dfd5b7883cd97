-- Function: etl.assert_window_covered(p_previous pg_snapshot) RETURNS void
--     Called by etl.stage_change_window right after it read the source's
--     snapshot, in the same remote transaction: refuses the window when the
--     source's change log no longer holds every change after the last
--     applied snapshot, i.e. when that snapshot's xmin lies below the
--     source's purge horizon (cdc.purge_horizon). That happens when this
--     warehouse stopped holding the purge back (it did not report for
--     longer than change_retention), or when it is a copy or a restored
--     backup of a warehouse whose position moved on. Nothing is applied:
--     the run fails before it stages anything.
-- Parameters:
--     p_previous - the last applied snapshot (the window starts at its xmin);
--                  NULL: nothing to check
-- Raises: 55000 with HINT CALL etl.run_initial_load(); when the window is
--     not covered.
-- Tables: reads src.purge_horizon.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner (the same user
--     mapping, hence the same remote transaction, as its caller); search_path
--     pinned.
CREATE OR REPLACE FUNCTION etl.assert_window_covered(p_previous pg_snapshot)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_start xid8 := pg_snapshot_xmin(p_previous);
    v_horizon xid8;
    v_purged_at timestamptz;
BEGIN
    IF v_start IS NULL THEN
        RETURN;
    END IF;
    SELECT h.horizon, h.purged_at INTO v_horizon, v_purged_at FROM src.purge_horizon AS h;
    IF v_horizon > v_start THEN
        RAISE EXCEPTION 'the source''s change log no longer covers this warehouse''s window: it starts at '
            'transaction %, but changes below % were purged (at %); consumer % stopped holding them back '
            'or this warehouse is a copy or restored backup', v_start, v_horizon,
            coalesce(v_purged_at::text, 'an unknown time'), quote_literal(etl.consumer_name())
            USING ERRCODE = '55000',
                  DETAIL = 'Applying the window would miss changes: nothing was applied.',
                  HINT = 'CALL etl.run_initial_load();';
    END IF;
END
$fn$;

COMMENT ON FUNCTION etl.assert_window_covered(pg_snapshot) IS
'Refuses (55000, hint: initial load) a change window whose start (the last applied snapshot''s xmin) '
'lies below the source''s purge horizon: changes it needs may be gone.';
