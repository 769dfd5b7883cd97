-- Function: etl.mark_run_abandoned(p_run_id bigint) RETURNS void
--     Gives up a run that is between steps and will not go on (its Airflow
--     DAG run was cancelled, a DBA stopped calling steps): marks it failed,
--     so that a new run can start. Refused (55P03) while one of its steps is
--     executing (it holds the pipeline lock until its transaction ends:
--     etl.take_pipeline_lock_until_commit). An initial load given up leaves
--     the star schema as its last step left it: start a new initial load.
-- Parameters:
--     p_run_id - the running run to give up
-- Tables: writes etl.run; a step of it left 'running' by a backend that died is
--     recorded failed (etl.record_interrupted_run: etl.loading_metadata, etl.error_log).
-- Commits: no; etl.abandon_run commits it.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.mark_run_abandoned(p_run_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT etl.take_pipeline_lock_until_commit() THEN
        RAISE EXCEPTION 'run % has a step executing (backend pid %)', p_run_id, etl.pipeline_lock_holder()
            USING ERRCODE = '55P03', HINT = 'Stop it first: SELECT pg_cancel_backend(pid);';
    END IF;
    UPDATE etl.run
       SET status = 'failed', finished_at = pg_catalog.clock_timestamp(),
           message = 'abandoned by ' || session_user
     WHERE run_id = p_run_id AND status = 'running';
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM etl.run AS r WHERE r.run_id = p_run_id) THEN
            RAISE EXCEPTION 'run % does not exist', p_run_id USING ERRCODE = '22023',
                HINT = 'See SELECT run_id, pipeline, status FROM etl.run ORDER BY run_id DESC;';
        END IF;
        RAISE EXCEPTION 'run % is not running', p_run_id USING ERRCODE = '55000';
    END IF;
    PERFORM etl.record_interrupted_run(p_run_id, 'etl.abandon_run', NULL);
END
$fn$;

COMMENT ON FUNCTION etl.mark_run_abandoned(bigint) IS
'Marks a running run failed for etl.abandon_run; refused with 55P03 while one of its steps executes.';
