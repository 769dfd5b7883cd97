-- Procedure: etl.end_step(p_loading_metadata_id bigint, p_sqlstate text,
--            p_message text, p_detail text, p_hint text, p_context text)
--     Closes a step opened by etl.begin_step (see etl.close_step, which
--     writes the outcome with the owner's rights), commits, then releases the
--     pipeline lock; if the outcome cannot be written, the lock is released
--     and that error raised.
--     Success (p_sqlstate NULL): the step is marked succeeded.
--     Failure: the step's uncommitted work is rolled back first, the failure
--     is recorded and committed, then the error is raised again with its own
--     SQLSTATE, so the caller (psql, an Airflow task) fails visibly.
-- Commits: yes (call it only with CALL, outside an explicit transaction).
CREATE OR REPLACE PROCEDURE etl.end_step(
    p_loading_metadata_id bigint,
    p_sqlstate text DEFAULT NULL,
    p_message text DEFAULT NULL,
    p_detail text DEFAULT NULL,
    p_hint text DEFAULT NULL,
    p_context text DEFAULT NULL
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    IF p_sqlstate IS NOT NULL THEN
        ROLLBACK;
    END IF;
    BEGIN
        PERFORM etl.close_step(p_loading_metadata_id, p_sqlstate, p_message, p_detail, p_hint, p_context);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        -- The outcome could not be recorded: never keep the pipeline lock for it.
        PERFORM etl.release_pipeline_lock();
        RAISE;
    END;
    COMMIT;
    -- Released once the outcome is committed: the next step sees this one closed.
    PERFORM etl.release_pipeline_lock();
    IF p_sqlstate IS NULL THEN
        RETURN;
    END IF;
    IF nullif(p_detail, '') IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message,
            HINT = coalesce(nullif(p_hint, ''),
                        'See etl.error_log; fix the cause and call the step again to resume.');
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message, DETAIL = p_detail,
        HINT = coalesce(nullif(p_hint, ''),
                        'See etl.error_log; fix the cause and call the step again to resume.');
END
$proc$;

COMMENT ON PROCEDURE etl.end_step(bigint, text, text, text, text, text) IS  -- noqa: LT01
'Closes a step opened by etl.begin_step and releases the pipeline lock: on success marks it '
'succeeded, on failure rolls back, logs in etl.error_log, fails step and run and raises again; '
'commits.';
