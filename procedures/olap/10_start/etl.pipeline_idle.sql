-- Function: etl.pipeline_idle() RETURNS boolean
--     True when a run could start now: no run is running, or the one that
--     is counts as interrupted (etl.run_interruption: a new run would
--     supersede it). What the DAG dwh_initial_load's sensor
--     (SqlSensor etl.pipeline_idle, reschedule mode) waits for before
--     etl.start_run, so that an initial load requested while an incremental
--     run is between steps waits for it instead of being refused. A plain
--     read: it neither takes a lock nor writes; etl.start_run decides.
-- Tables: reads etl.run, etl.loading_metadata, pg_stat_activity, pg_locks.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.pipeline_idle()
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT NOT EXISTS (
        SELECT 1 FROM etl.run AS r
         WHERE r.status = 'running' AND etl.run_interruption(r.run_id) IS NULL
    );
$fn$;

COMMENT ON FUNCTION etl.pipeline_idle() IS
'True when a run could start now: none is running, or the running one is interrupted (a new run '
'supersedes it); a plain read, for the sensor of DAG dwh_initial_load.';
