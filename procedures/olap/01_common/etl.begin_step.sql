-- Function: etl.begin_step(p_run_id bigint, p_step text, p_table text)
--           RETURNS etl.loading_metadata
--     Opens (or re-opens, on a retry) the metadata row of one step of a run
--     and takes the pipeline lock for this session, so that no two steps
--     ever execute at once, and records this backend as the step's executor
--     (only it may call the step's unit: etl.assert_step_executor). The step
--     must be one of the run's pipeline (etl.pipeline_step), and every step
--     before it must have succeeded, each after the ones before it. A step
--     of the run left 'running' by a backend that died is first recorded
--     failed, with its error (etl.record_interrupted_run).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress, or else the latest
--                run if it failed (a retried step resumes it). A failed run
--                that a later run superseded is never resumed.
--     p_step   - the step's procedure name, e.g. 'dwh.load_dim_product'
--     p_table  - the table the step writes
-- Returns: the step's etl.loading_metadata row (its resume_after survives).
-- Raises: 55000 when there is no run to work for, the step is not one of
--     its pipeline or an earlier step is due, or its staging was lost
--     (etl.assert_stage_intact); 55P03 when another step holds the pipeline
--     lock (the run's own one-call caller waits up to 10 s for it first).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.begin_step(p_run_id bigint, p_step text, p_table text)
RETURNS etl.loading_metadata
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run etl.run;
    v_step etl.loading_metadata;
    v_position smallint;
    v_due text;
    v_locked boolean;
BEGIN
    IF p_run_id IS NULL THEN
        SELECT * INTO v_run FROM etl.run AS r
         WHERE r.status = 'running' OR r.run_id = (SELECT max(run_id) FROM etl.run)
         ORDER BY (r.status = 'running') DESC
         LIMIT 1;
    ELSE
        SELECT * INTO v_run FROM etl.run AS r WHERE r.run_id = p_run_id;
    END IF;
    IF v_run.status = 'failed' AND v_run.run_id <> (SELECT max(r.run_id) FROM etl.run AS r) THEN
        RAISE EXCEPTION 'run % failed and was superseded by run %; it cannot be resumed',
            v_run.run_id, (SELECT max(r.run_id) FROM etl.run AS r)
            USING ERRCODE = '55000', HINT = 'Work on the latest run, or start a new one.';
    END IF;
    IF v_run.run_id IS NULL OR v_run.status = 'succeeded' THEN
        RAISE EXCEPTION 'no etl run to work for (%)',
            coalesce('run ' || p_run_id || ' ' || coalesce(v_run.status, 'does not exist'),
                     'none is running')
            USING ERRCODE = '55000',
                  HINT = 'Start one: CALL etl.run_initial_load(); or CALL etl.start_run(''initial_load'');';
    END IF;

    -- Only a step of the run's pipeline, with the table it writes.
    SELECT s.position INTO v_position FROM etl.pipeline_step AS s
     WHERE s.pipeline = v_run.pipeline AND s.step = p_step AND s.table_name = p_table;
    IF v_position IS NULL THEN
        RAISE EXCEPTION '% (table %) is not a step of the % pipeline (run %)',
            p_step, p_table, v_run.pipeline, v_run.run_id
            USING ERRCODE = '55000', HINT = 'See SELECT * FROM etl.pipeline_step ORDER BY pipeline, position;';
    END IF;

    PERFORM etl.assert_stage_intact(v_run.run_id, p_step);

    v_locked := etl.take_pipeline_lock();
    -- The caller that runs every step of its run itself (etl.run_initial_load,
    -- etl.run_incremental_update) waits a little: a second caller being refused
    -- holds the lock for a moment (etl.open_run), and must not make the run that
    -- is going fail between its steps.
    IF NOT v_locked AND v_run.driver_pid = pg_backend_pid() THEN
        FOR i IN 1..200 LOOP
            PERFORM pg_sleep(0.05);
            v_locked := etl.take_pipeline_lock();
            EXIT WHEN v_locked;
        END LOOP;
    END IF;
    IF NOT v_locked THEN
        RAISE EXCEPTION 'another pipeline step is executing (backend pid %)',
            coalesce(etl.pipeline_lock_holder()::text, 'gone')
            USING ERRCODE = '55P03',
                  HINT = 'Wait for it to finish; see SELECT * FROM etl.loading_metadata WHERE status = ''running'';';
    END IF;

    -- From here on the session holds the pipeline lock (a session lock, which a
    -- rollback does not give back): an error must release it before it is raised.
    BEGIN
        -- Only once every earlier step has succeeded after the ones before it
        -- (read holding the lock: no step is changing them): a step run again
        -- (a retried pull) makes the later ones due again.
        SELECT e.step INTO v_due
          FROM (SELECT s.step, s.position, m.status, m.finished_at,
                       max(m.finished_at) OVER (ORDER BY s.position ROWS BETWEEN UNBOUNDED PRECEDING
                                                                         AND 1 PRECEDING) AS before_at
                  FROM etl.pipeline_step AS s
                  LEFT JOIN etl.loading_metadata AS m ON m.run_id = v_run.run_id AND m.step = s.step
                 WHERE s.pipeline = v_run.pipeline AND s.position < v_position) AS e
         WHERE e.status IS DISTINCT FROM 'succeeded' OR e.finished_at < e.before_at
         ORDER BY e.position LIMIT 1;
        IF v_due IS NOT NULL THEN
            RAISE EXCEPTION 'step % of run % cannot run before % has succeeded (after the steps before it)',
                p_step, v_run.run_id, v_due
                USING ERRCODE = '55000',
                      HINT = pg_catalog.format('Call %s first; the steps in order: SELECT step FROM etl.pipeline_step '
                                               'WHERE pipeline = %L ORDER BY position;', v_due, v_run.pipeline);
        END IF;

        -- Holding the lock, no step of the run can be executing: one still 'running' was
        -- interrupted (its backend died), and is recorded failed before the run goes on.
        IF etl.record_interrupted_run(v_run.run_id, p_step, NULL) > 0 OR v_run.status = 'failed' THEN
            UPDATE etl.run AS r SET status = 'running', finished_at = NULL,
                   message = 'resumed by ' || p_step
             WHERE r.run_id = v_run.run_id;
        END IF;

        INSERT INTO etl.loading_metadata AS m (run_id, step, table_name, executor_pid)
        VALUES (v_run.run_id, p_step, p_table, pg_backend_pid())
        ON CONFLICT (run_id, step, table_name) DO UPDATE
            SET status = 'running', finished_at = NULL, message = NULL, started_at = clock_timestamp(),
                executor_pid = excluded.executor_pid
        RETURNING * INTO v_step;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM etl.release_pipeline_lock();
        RAISE;
    END;
    RETURN v_step;
END
$fn$;

COMMENT ON FUNCTION etl.begin_step(bigint, text, text) IS
'Opens or re-opens one step''s etl.loading_metadata row for a run (NULL: the run in progress or the '
'latest failed one) and takes the pipeline lock; returns the row.';
