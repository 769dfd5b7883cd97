-- Function: etl.close_step(p_loading_metadata_id bigint, p_sqlstate text,
--           p_message text, p_detail text, p_hint text, p_context text) RETURNS void
--     Records the outcome of the step this session executes (refused with
--     55000 for any other: etl.assert_step_executor). The pipeline lock is
--     released by etl.end_step once this is committed, not here: released
--     before the commit, it let the next step see this one still running.
--     Success (p_sqlstate NULL): marks the step succeeded.
--     Failure: logs the error in etl.error_log and marks the step and its run
--     failed.
-- Tables: writes etl.loading_metadata, etl.error_log, etl.run.
-- Commits: no; etl.end_step commits it.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.close_step(
    p_loading_metadata_id bigint,
    p_sqlstate text,
    p_message text,
    p_detail text,
    p_hint text,
    p_context text
)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, NULL);
    IF p_sqlstate IS NULL THEN
        UPDATE etl.loading_metadata
           SET status = 'succeeded', finished_at = clock_timestamp()
         WHERE loading_metadata_id = p_loading_metadata_id;
        RETURN;
    END IF;

    INSERT INTO etl.error_log (run_id, procedure_name, kind, sqlstate, message, detail, hint, context)
    SELECT m.run_id, m.step, 'error', p_sqlstate, p_message, p_detail, p_hint, p_context
      FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    UPDATE etl.loading_metadata
       SET status = 'failed', finished_at = clock_timestamp(), message = p_message
     WHERE loading_metadata_id = p_loading_metadata_id;
    UPDATE etl.run AS r
       SET status = 'failed', finished_at = clock_timestamp(),
           message = m.step || ' failed: ' || p_message
      FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id AND r.run_id = m.run_id;
END
$fn$;

COMMENT ON FUNCTION etl.close_step(bigint, text, text, text, text, text) IS
'Records a step''s outcome for etl.end_step: succeeded, or failed with the error in etl.error_log and '
'the run failed; only for the step this session executes.';
