-- Function: etl.assert_stage_intact(p_run_id bigint, p_step text) RETURNS void
--     Staging (etl.stage_*, etl.change_window) is unlogged: a server crash
--     or failover empties it. A step that reads it must not go on from
--     nothing, or it would apply an empty window and mark it applied. This
--     compares what the run's extract or pull recorded (logged) with what
--     staging still holds.
-- Raises: 55000 when the run staged rows that are gone.
-- Tables: reads etl.run, etl.loading_metadata, etl.stage_*, etl.change_window.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.assert_stage_intact(p_run_id bigint, p_step text)
RETURNS void
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run etl.run;
    v_lost boolean;
BEGIN
    IF p_step IN ('etl.extract_source', 'etl.pull_change_window') THEN
        RETURN;
    END IF;
    SELECT r.* INTO v_run FROM etl.run AS r WHERE r.run_id = p_run_id;
    IF v_run.pipeline = 'incremental_update' THEN
        v_lost := v_run.changes_in_window > 0 AND NOT EXISTS (SELECT 1 FROM etl.change_window);
    ELSE
        v_lost := EXISTS (SELECT 1 FROM etl.loading_metadata AS m
                           WHERE m.run_id = p_run_id AND m.step = 'etl.extract_source'
                             AND m.status = 'succeeded' AND m.rows_in > 0)
                  AND NOT EXISTS (SELECT 1 FROM etl.stage_accounts)
                  AND NOT EXISTS (SELECT 1 FROM etl.stage_products)
                  AND NOT EXISTS (SELECT 1 FROM etl.stage_sales_agents)
                  AND NOT EXISTS (SELECT 1 FROM etl.stage_sales_pipeline);
    END IF;
    IF v_lost THEN
        RAISE EXCEPTION 'the staged source of run % is gone (the server restarted?)', p_run_id
            USING ERRCODE = '55000',
                  HINT = 'Start the run again: CALL etl.run_initial_load(); or CALL etl.run_incremental_update();';
    END IF;
END
$fn$;

COMMENT ON FUNCTION etl.assert_stage_intact(bigint, text) IS
'Raises 55000 when the unlogged staging (etl.stage_*, etl.change_window) lost rows that the run''s '
'extract or pull recorded, e.g. after a server crash.';
