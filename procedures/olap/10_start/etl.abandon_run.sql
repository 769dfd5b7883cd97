-- Procedure: etl.abandon_run(p_run_id bigint)
--     Gives up a run that is between steps and will not go on (its Airflow
--     DAG run was cancelled, a DBA stopped calling steps): marks it failed,
--     so that a new run can start. Refused (55P03) while one of its steps is
--     executing. An initial load given up leaves the star schema as its last
--     step left it: start a new initial load. A step of it left 'running'
--     by a backend that died is recorded failed (etl.record_interrupted_run).
-- Parameters:
--     p_run_id - the running run to give up
-- Tables: writes etl.run, etl.loading_metadata, etl.error_log.
-- Commits: yes.
CREATE OR REPLACE PROCEDURE etl.abandon_run(p_run_id bigint)
LANGUAGE plpgsql
AS $proc$
BEGIN
    IF NOT etl.take_pipeline_lock() THEN
        RAISE EXCEPTION 'run % has a step executing (backend pid %)', p_run_id, etl.pipeline_lock_holder()
            USING ERRCODE = '55P03', HINT = 'Stop it first: SELECT pg_cancel_backend(pid);';
    END IF;
    UPDATE etl.run
       SET status = 'failed', finished_at = pg_catalog.clock_timestamp(),
           message = 'abandoned by ' || current_user
     WHERE run_id = p_run_id AND status = 'running';
    IF NOT FOUND THEN
        PERFORM etl.release_pipeline_lock();
        RAISE EXCEPTION 'run % is not running', p_run_id USING ERRCODE = '55000';
    END IF;
    PERFORM etl.record_interrupted_run(p_run_id, 'etl.abandon_run', NULL);
    PERFORM etl.release_pipeline_lock();
    COMMIT;
    RAISE NOTICE 'run % abandoned', p_run_id;
END
$proc$;
