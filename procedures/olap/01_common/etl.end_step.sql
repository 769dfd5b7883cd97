-- Procedure: etl.end_step(p_loading_metadata_id bigint, p_sqlstate text,
--            p_message text, p_detail text, p_hint text, p_context text)
--     Closes a step opened by etl.begin_step and releases the pipeline lock.
--     Success (p_sqlstate NULL): marks the step succeeded and commits.
--     Failure: rolls back the step's uncommitted work, logs the error in
--     etl.error_log, marks the step and its run failed, commits that, and
--     raises the error again with its own SQLSTATE, so the caller (psql, an
--     Airflow task) fails visibly.
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
    IF p_sqlstate IS NULL THEN
        UPDATE etl.loading_metadata
           SET status = 'succeeded', finished_at = pg_catalog.clock_timestamp()
         WHERE loading_metadata_id = p_loading_metadata_id;
        PERFORM etl.release_pipeline_lock();
        COMMIT;
        RETURN;
    END IF;

    ROLLBACK;
    INSERT INTO etl.error_log (run_id, procedure_name, kind, sqlstate, message, detail, hint, context)
    SELECT m.run_id, m.step, 'error', p_sqlstate, p_message, p_detail, p_hint, p_context
      FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    UPDATE etl.loading_metadata
       SET status = 'failed', finished_at = pg_catalog.clock_timestamp(), message = p_message
     WHERE loading_metadata_id = p_loading_metadata_id;
    UPDATE etl.run AS r
       SET status = 'failed', finished_at = pg_catalog.clock_timestamp(),
           message = m.step || ' failed: ' || p_message
      FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id AND r.run_id = m.run_id;
    PERFORM etl.release_pipeline_lock();
    COMMIT;
    IF nullif(p_detail, '') IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message,
            HINT = coalesce(nullif(p_hint, ''), 'See etl.error_log; fix the cause and call the step again to resume.');
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message, DETAIL = p_detail,
        HINT = coalesce(nullif(p_hint, ''), 'See etl.error_log; fix the cause and call the step again to resume.');
END
$proc$;

COMMENT ON PROCEDURE etl.end_step(bigint, text, text, text, text, text) IS  -- noqa: LT01
'Closes a step opened by etl.begin_step and releases the pipeline lock: on success marks it '
'succeeded, on failure rolls back, logs in etl.error_log, fails step and run and raises again; '
'commits.';
