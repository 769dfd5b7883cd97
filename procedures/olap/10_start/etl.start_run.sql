-- Procedure: etl.start_run(p_pipeline text, p_batch_size integer, INOUT p_run_id bigint,
--                           p_in_one_call boolean, p_when_busy text)
--     Starts a run of a pipeline and commits it: see etl.open_run, which does
--     the work with the owner's rights (this procedure commits, so it cannot
--     be SECURITY DEFINER itself). While another run is going:
--     'refuse' (default) raises 55P03; 'skip' returns p_run_id NULL (and,
--     for an incremental update, so does the absence of any initial load),
--     with a NOTICE saying why: the DAG dwh_incremental_update then branches
--     to its no-op; 'wait' tries again every second, committing in
--     between (it holds no lock while it waits), until the run going has
--     ended or counts as interrupted (etl.run_interruption), then starts:
--     what the DAG dwh_initial_load does after its sensor, in case another
--     run started between the sensor's last look and this call. Each
--     attempt decides and starts in one transaction under the pipeline
--     lock, so two callers never both start, whatever the timing.
-- Parameters:
--     p_pipeline    - 'initial_load', 'incremental_update' or 'horizon_move'
--     p_batch_size  - rows per committed batch (default: etl.config batch_size)
--     p_run_id      - OUT: the new run's id (NULL: none started, 'skip' only)
--     p_in_one_call - true when the caller runs every step itself
--     p_when_busy   - 'refuse' (default), 'skip' or 'wait'
-- Tables: writes etl.run (through etl.open_run).
-- Commits: yes (each attempt, when waiting).
CREATE OR REPLACE PROCEDURE etl.start_run(
    p_pipeline text,
    p_batch_size integer DEFAULT NULL,
    INOUT p_run_id bigint DEFAULT NULL,
    p_in_one_call boolean DEFAULT FALSE,
    p_when_busy text DEFAULT 'refuse'
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_waiting_since timestamptz;
BEGIN
    LOOP
        p_run_id := etl.open_run(p_pipeline, p_batch_size, p_in_one_call, p_when_busy);
        COMMIT;
        EXIT WHEN p_run_id IS NOT NULL OR p_when_busy IS DISTINCT FROM 'wait';
        IF v_waiting_since IS NULL THEN
            v_waiting_since := pg_catalog.clock_timestamp();
            RAISE NOTICE 'another run is going: the % run waits for it to end', p_pipeline;
        END IF;
        PERFORM pg_catalog.pg_sleep(1);
    END LOOP;
    IF v_waiting_since IS NOT NULL THEN
        RAISE NOTICE 'run % started after waiting %', p_run_id,
            pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - v_waiting_since);
    END IF;
END
$proc$;

COMMENT ON PROCEDURE etl.start_run(text, integer, bigint, boolean, text) IS  -- noqa: LT01
'Starts a run of a pipeline (initial_load, incremental_update or horizon_move) in etl.run and returns '
'its id; while another run is going refused with 55P03 (p_when_busy refuse), NULL (skip: also an incremental update '
'before any initial load) or waits (wait); a dead or idle one is marked failed; commits.';
