-- Function: etl.open_run(p_pipeline text, p_batch_size integer, p_in_one_call boolean,
--                        p_when_busy text)
--     RETURNS bigint
--     Starts a run of a pipeline ('initial_load', 'incremental_update' or
--     'horizon_move').
--     Two runs never interleave: the pipeline lock is held until the
--     transaction that writes the run ends (etl.take_pipeline_lock_until_commit),
--     so of two callers at once one starts and the other is refused (55P03). While another run is going, starting one
--     is refused (55P03) with what it is doing: a step of it is executing,
--     or it is between two steps (an Airflow DAG between tasks, a DBA
--     calling steps by hand). A run whose caller died in the middle of a
--     step (its step is still 'running' but nobody holds the pipeline
--     lock), or that has been idle longer than run_idle_timeout, is marked
--     failed instead, with a NOTICE, and the new run starts; its
--     interrupted step is marked failed and logged in etl.error_log
--     (etl.record_interrupted_run), which its dead caller could not do
--     (etl.run_interruption says which runs count as interrupted).
--     With p_when_busy 'skip' or 'wait', where it would be refused because
--     another run is going it returns NULL instead, without writing
--     anything ('skip' with a NOTICE saying why). With 'skip', an
--     incremental update before any initial load has been started also
--     returns NULL (NOTICE): the decision and the start are one
--     transaction under the pipeline lock, so a run started by someone else
--     in between is seen.
-- Parameters:
--     p_pipeline   - 'initial_load', 'incremental_update' or 'horizon_move'
--     p_batch_size - rows per committed batch (default: etl.config batch_size)
--     p_in_one_call - true when the caller runs every step itself
--                    (etl.run_initial_load, etl.run_incremental_update,
--                    etl.run_horizon_move):
--                    its backend is recorded, so that its death is seen
--     p_when_busy  - 'refuse' (default: 55P03), 'skip' or 'wait' (NULL, see
--                    above; etl.start_run loops on 'wait')
-- Raises: 22023 for an unknown pipeline or p_when_busy, a batch size below
--     1, and (initial load, horizon move) an etl.config cold_horizon that is
--     not one (etl.cold_horizon); 55P03 as above.
-- Tables: writes etl.run (and, for an interrupted run, etl.loading_metadata,
--     etl.error_log).
-- Returns: the new run's id, or NULL (p_when_busy 'skip' or 'wait' only).
-- Commits: no; etl.start_run commits it.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.open_run(
    p_pipeline text,
    p_batch_size integer,
    p_in_one_call boolean,
    p_when_busy text DEFAULT 'refuse'
)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_batch_size integer := coalesce(p_batch_size, etl.config_value('batch_size')::integer);
    v_running etl.run;
    v_last_step text;
    v_last_at timestamptz;
    v_run_id bigint;
    v_interrupted text;
BEGIN
    IF p_pipeline IS NULL OR p_pipeline NOT IN ('initial_load', 'incremental_update', 'horizon_move') THEN
        RAISE EXCEPTION 'unknown pipeline %', coalesce(pg_catalog.quote_literal(p_pipeline), 'NULL')
            USING ERRCODE = '22023', HINT = 'Use ''initial_load'', ''incremental_update'' or ''horizon_move''.';
    END IF;
    IF p_when_busy IS NULL OR p_when_busy NOT IN ('refuse', 'skip', 'wait') THEN
        RAISE EXCEPTION 'unknown p_when_busy %', coalesce(pg_catalog.quote_literal(p_when_busy), 'NULL')
            USING ERRCODE = '22023', HINT = 'Use ''refuse'', ''skip'' or ''wait''.';
    END IF;
    IF v_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be positive, got %', v_batch_size USING ERRCODE = '22023';
    END IF;
    -- The horizon these runs place facts by (etl.config cold_horizon): a value
    -- it cannot give stops the run here, before anything changes (an initial
    -- load would otherwise empty the star schema, then fail at its fact step).
    IF p_pipeline IN ('initial_load', 'horizon_move') THEN
        PERFORM etl.cold_horizon(pg_catalog.clock_timestamp());
    END IF;
    -- Until commit: the new run row is committed before anyone else can take
    -- the lock and look for a running run (a session lock given back before
    -- the commit let a second caller miss it and collide on run_one_running_idx).
    IF NOT etl.take_pipeline_lock_until_commit() THEN
        IF p_when_busy <> 'refuse' THEN
            IF p_when_busy = 'skip' THEN
                RAISE NOTICE 'no % run started: another caller holds the pipeline lock (backend pid %)',
                    p_pipeline, coalesce(etl.pipeline_lock_holder()::text, 'gone');
            END IF;
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'cannot start a % run: %', p_pipeline,
            coalesce('a step of run ' || (SELECT r.run_id FROM etl.run AS r WHERE r.status = 'running')
                     || ' is executing', 'another caller is starting a run')
            || pg_catalog.format(' (backend pid %s)', coalesce(etl.pipeline_lock_holder()::text, 'gone'))
            USING ERRCODE = '55P03',
                  HINT = 'Wait for it to finish, then start again; see SELECT * FROM etl.run ORDER BY run_id DESC LIMIT 1;';
    END IF;

    IF p_when_busy = 'skip' AND p_pipeline = 'incremental_update'
       AND NOT EXISTS (SELECT 1 FROM etl.run AS r WHERE r.pipeline = 'initial_load') THEN
        RAISE NOTICE 'no incremental_update run started: no initial load yet'
            USING HINT = 'The incremental update applies changes to a loaded warehouse: run the initial load '
                         '(DAG dwh_initial_load, or CALL etl.run_initial_load();).';
        RETURN NULL;
    END IF;

    SELECT r.* INTO v_running FROM etl.run AS r WHERE r.status = 'running';
    IF v_running.run_id IS NOT NULL THEN
        SELECT m.step, coalesce(m.finished_at, m.started_at)
          INTO v_last_step, v_last_at
          FROM etl.loading_metadata AS m
         WHERE m.run_id = v_running.run_id
         ORDER BY m.loading_metadata_id DESC LIMIT 1;
        v_last_at := coalesce(v_last_at, v_running.started_at);
        v_interrupted := etl.run_interruption(v_running.run_id);
        IF v_interrupted IS NOT NULL THEN
            -- The failure trace its dead caller could not write: steps failed, error logged.
            PERFORM etl.record_interrupted_run(v_running.run_id, 'etl.start_run', v_interrupted);
            UPDATE etl.run
               SET status = 'failed', finished_at = clock_timestamp(),
                   message = 'interrupted: superseded by a new run before it finished (' || v_interrupted || ')'
             WHERE run_id = v_running.run_id;
            RAISE NOTICE 'run % was left running by an interrupted caller; marked failed',
                v_running.run_id;
        ELSIF p_when_busy <> 'refuse' THEN
            IF p_when_busy = 'skip' THEN
                RAISE NOTICE 'no % run started: % run % is between steps (last: % at %)',
                    p_pipeline, v_running.pipeline, v_running.run_id, coalesce(v_last_step, 'etl.start_run'),
                    pg_catalog.to_char(v_last_at, 'YYYY-MM-DD HH24:MI:SS');
            END IF;
            RETURN NULL;
        ELSE
            RAISE EXCEPTION 'cannot start a % run: % run % is between steps (last: % at %)',
                p_pipeline, v_running.pipeline, v_running.run_id, coalesce(v_last_step, 'etl.start_run'),
                pg_catalog.to_char(v_last_at, 'YYYY-MM-DD HH24:MI:SS')
                USING ERRCODE = '55P03',
                      HINT = pg_catalog.format(
                          'It goes on when its next step is called. Wait for it, or give it up: CALL etl.abandon_run(%s);',
                          v_running.run_id);
        END IF;
    END IF;

    -- session_user: the role that called, not the owner this function runs as.
    INSERT INTO etl.run (pipeline, batch_size, started_by, driver_pid, driver_started_at)
    SELECT p_pipeline, v_batch_size, session_user, a.pid, a.backend_start
      FROM (SELECT pg_catalog.pg_backend_pid() AS pid) AS me
      LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = me.pid AND p_in_one_call
    RETURNING run_id INTO v_run_id;
    RETURN v_run_id;
END
$fn$;

COMMENT ON FUNCTION etl.open_run(text, integer, boolean, text) IS
'Creates a run in etl.run for etl.start_run and returns its id; while another run is going refused with '
'55P03, or NULL when p_when_busy is skip or wait (skip: also before any initial load); a dead or idle one '
'is marked failed.';
