-- Function: etl.run_interruption(p_run_id bigint) RETURNS text
--     Why a running run counts as interrupted, so that a new run may
--     supersede it (etl.open_run) and the pipeline counts as idle
--     (etl.pipeline_idle); NULL while it is alive. Interrupted: its last step
--     is 'running' and nobody else holds the pipeline lock (its executor
--     died), or its caller in one call (driver_pid) is gone, or it has been
--     idle between steps longer than etl.config run_idle_timeout.
-- Parameters:
--     p_run_id - a run; NULL is returned for a run that is not running
-- Tables: reads etl.run, etl.loading_metadata, pg_stat_activity, pg_locks.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: only the owner's functions call it.
CREATE OR REPLACE FUNCTION etl.run_interruption(p_run_id bigint)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run etl.run;
    v_last_step text;
    v_last_status text;
    v_last_at timestamptz;
    v_lock_holder integer := etl.pipeline_lock_holder();
BEGIN
    SELECT r.* INTO v_run FROM etl.run AS r WHERE r.run_id = p_run_id AND r.status = 'running';
    IF v_run.run_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT m.step, m.status, coalesce(m.finished_at, m.started_at)
      INTO v_last_step, v_last_status, v_last_at
      FROM etl.loading_metadata AS m
     WHERE m.run_id = v_run.run_id
     ORDER BY m.loading_metadata_id DESC LIMIT 1;
    v_last_at := coalesce(v_last_at, v_run.started_at);
    RETURN CASE
        WHEN v_last_status = 'running'
             AND (v_lock_holder IS NULL OR v_lock_holder = pg_backend_pid())
            THEN format('its step %s was left running', v_last_step)
        WHEN v_run.driver_pid IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM pg_stat_activity AS a
                WHERE a.pid = v_run.driver_pid
                  AND a.backend_start = v_run.driver_started_at)
            THEN format('its caller (backend pid %s) is gone', v_run.driver_pid)
        WHEN clock_timestamp() - v_last_at > etl.config_value('run_idle_timeout')::interval
            THEN 'idle for longer than run_idle_timeout'
    END;
END
$fn$;

COMMENT ON FUNCTION etl.run_interruption(bigint) IS
'Why a running run counts as interrupted (its step left running, its caller gone, idle beyond '
'run_idle_timeout), or NULL while it is alive; internal to etl.open_run and etl.pipeline_idle.';
