-- Function: etl.close_run(p_loading_metadata_id bigint) RETURNS text
--     Unit of etl.finish_run. Marks the run succeeded (an initial load's
--     snapshot becomes the start of the next incremental window), or refuses
--     (55000) while one of its steps has not succeeded or it was never
--     validated.
-- Returns: NULL (done).
-- Tables: reads etl.loading_metadata, etl.validation_result; writes etl.run.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION etl.close_run(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run_id bigint;
    v_unfinished text;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'etl.close_run');
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT string_agg(m.step || ' (' || m.status || ')', ', ' ORDER BY m.loading_metadata_id)
      INTO v_unfinished
      FROM etl.loading_metadata AS m
     WHERE m.run_id = v_run_id AND m.status <> 'succeeded'
       AND m.loading_metadata_id <> p_loading_metadata_id;
    IF v_unfinished IS NOT NULL THEN
        RAISE EXCEPTION 'run % cannot finish: steps not succeeded: %', v_run_id, v_unfinished
            USING ERRCODE = '55000', HINT = 'Call the failed step again to resume the run.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM etl.validation_result AS v WHERE v.run_id = v_run_id) THEN
        RAISE EXCEPTION 'run % cannot finish: it was not validated', v_run_id
            USING ERRCODE = '55000', HINT = 'CALL etl.validate_run();';
    END IF;
    -- An initial load's snapshot is applied once the whole rebuild is: the
    -- next incremental window starts there. (An incremental run marks its
    -- window applied in the transaction that applies it.)
    UPDATE etl.run
       SET status = 'succeeded', finished_at = clock_timestamp(), message = NULL,
           window_applied = window_applied OR pipeline = 'initial_load'
     WHERE run_id = v_run_id;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_updated => 1);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION etl.close_run(bigint) IS
'Unit of etl.finish_run: marks the run succeeded in etl.run, or refuses with 55000 while a step has '
'not succeeded or the run was never validated.';
