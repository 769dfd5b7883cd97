-- Procedure: etl.start_run(p_pipeline text, p_batch_size integer, INOUT p_run_id bigint)
--     Starts a run of a pipeline ('initial_load' or 'incremental_update').
--     A run left 'running' by an interrupted caller (no step of it is
--     executing) is marked failed first, with a NOTICE; while a step is
--     executing, starting another run is refused.
-- Parameters:
--     p_pipeline   - 'initial_load' or 'incremental_update'
--     p_batch_size - rows per committed batch (default: etl.config batch_size)
--     p_run_id     - OUT: the new run's id
-- Tables: writes etl.run.
-- Commits: yes.
CREATE OR REPLACE PROCEDURE etl.start_run(
    p_pipeline text,
    p_batch_size integer DEFAULT NULL,
    INOUT p_run_id bigint DEFAULT NULL
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_batch_size integer := coalesce(p_batch_size, etl.config_value('batch_size')::integer);
    v_abandoned bigint;
BEGIN
    IF p_pipeline IS NULL OR p_pipeline NOT IN ('initial_load', 'incremental_update') THEN
        RAISE EXCEPTION 'unknown pipeline %', coalesce(pg_catalog.quote_literal(p_pipeline), 'NULL')
            USING ERRCODE = '22023', HINT = 'Use ''initial_load'' or ''incremental_update''.';
    END IF;
    IF v_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be positive, got %', v_batch_size USING ERRCODE = '22023';
    END IF;
    IF NOT pg_catalog.pg_try_advisory_lock(1647469175, 1) THEN
        RAISE EXCEPTION 'cannot start a % run: a step of run % is executing (backend pid %)',
            p_pipeline, (SELECT r.run_id FROM etl.run AS r WHERE r.status = 'running'),
            etl.pipeline_lock_holder()
            USING ERRCODE = '55P03', HINT = 'Wait for that run to finish, then start again.';
    END IF;

    UPDATE etl.run
       SET status = 'failed', finished_at = pg_catalog.clock_timestamp(),
           message = 'interrupted: superseded by a new run before it finished'
     WHERE status = 'running'
    RETURNING run_id INTO v_abandoned;
    IF v_abandoned IS NOT NULL THEN
        RAISE NOTICE 'run % was left running by an interrupted caller; marked failed', v_abandoned;
    END IF;

    INSERT INTO etl.run (pipeline, batch_size) VALUES (p_pipeline, v_batch_size)
    RETURNING run_id INTO p_run_id;
    PERFORM pg_catalog.pg_advisory_unlock(1647469175, 1);
    COMMIT;
END
$proc$;
