-- Procedure: etl.run_step(p_run_id bigint, p_step text, p_table text, p_unit regproc)
--     The one way a pipeline step runs. Opens the step (etl.begin_step:
--     metadata row, pipeline lock), then calls its unit of work, a function
--     taking the step's etl.loading_metadata id, committing after each call,
--     until the unit says it is done. Any error rolls back the unit's
--     uncommitted work and is logged, failing the step and the run
--     (etl.end_step), then raised again. That includes a cancel
--     (statement_timeout, pg_cancel_backend: SQLSTATE 57014), which WHEN
--     OTHERS alone does not catch: it would leave the step 'running' and the
--     pipeline lock held by the session.
--     A unit function returns:
--         NULL    - done;
--         'more'  - one batch committed, call again (it resumes from the
--                   resume_after it recorded with etl.add_step_counts);
--         other   - the step failed for that reason, but what the unit wrote
--                   (e.g. validation results) is kept.
-- Parameters:
--     p_run_id - the run; NULL means the run in progress (or the latest
--                failed one, which a retried step resumes)
--     p_step   - the step's procedure name, recorded in etl.loading_metadata
--     p_table  - the table the step writes
--     p_unit   - the unit-of-work function
-- Commits: after every unit call. Call it only with CALL, outside an
--     explicit transaction block.
CREATE OR REPLACE PROCEDURE etl.run_step(
    p_run_id bigint,
    p_step text,
    p_table text,
    p_unit regproc
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_step etl.loading_metadata;
    v_outcome text;
    v_state text;
    v_message text;
    v_detail text;
    v_hint text;
    v_context text;
BEGIN
    -- Fails here (2D000) inside a transaction block, before the lock is taken.
    COMMIT;
    v_step := etl.begin_step(p_run_id, p_step, p_table);
    COMMIT;
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('SELECT %s($1)', p_unit) INTO v_outcome
                USING v_step.loading_metadata_id;
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT,
                v_context = PG_EXCEPTION_CONTEXT;
        END;
        EXIT WHEN v_state IS NOT NULL;
        COMMIT;
        EXIT WHEN v_outcome IS DISTINCT FROM 'more';
    END LOOP;
    IF v_state IS NULL AND v_outcome IS NOT NULL THEN
        v_state := 'B2B01';
        v_message := v_outcome;
    END IF;
    CALL etl.end_step(v_step.loading_metadata_id, v_state, v_message, v_detail, v_hint, v_context);
END
$proc$;

COMMENT ON PROCEDURE etl.run_step(bigint, text, text, regproc) IS  -- noqa: LT01
'The one way a pipeline step runs: opens the step (metadata row, pipeline lock), calls its unit '
'function committing after each call until done, and logs and re-raises any error.';
