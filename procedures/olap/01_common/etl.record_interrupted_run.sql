-- Function: etl.record_interrupted_run(p_run_id bigint, p_noticed_by text, p_reason text)
--           RETURNS integer
--     Completes the trace of a run whose caller died: a backend terminated
--     (pg_terminate_backend, a crash) or gone with its client cannot mark
--     anything, so its step stays 'running' and its error is never logged.
--     Called holding the pipeline lock, when nobody can be executing a step
--     of the run: every step of it still 'running' is marked failed and
--     logged in etl.error_log (SQLSTATE B2B02). When no step was running (the
--     caller died between steps, or the run sat idle), the reason is logged
--     instead. The run itself is left to the caller: etl.start_run marks it
--     failed, etl.begin_step resumes it.
-- Parameters:
--     p_run_id     - the run
--     p_noticed_by - the procedure that noticed (recorded in the message)
--     p_reason     - why the run is taken as interrupted, when no step was
--                    running; NULL logs nothing then
-- Returns: the number of error_log rows written.
-- Tables: writes etl.loading_metadata, etl.error_log.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.record_interrupted_run(p_run_id bigint, p_noticed_by text, p_reason text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_logged integer;
BEGIN
    WITH interrupted AS (
        UPDATE etl.loading_metadata AS m
           SET status = 'failed', finished_at = clock_timestamp(),
               message = 'interrupted: its backend ended before the step finished'
         WHERE m.run_id = p_run_id AND m.status = 'running'
        RETURNING m.run_id, m.step, m.table_name, m.batches, m.resume_after, m.started_at
    )
    INSERT INTO etl.error_log (run_id, procedure_name, kind, sqlstate, message, detail, hint, table_name)
    SELECT i.run_id, i.step, 'error', 'B2B02',
           format('%s was interrupted: its backend ended before the step finished', i.step),
           format('Started at %s; %s batches committed (resume after %s); noticed by %s.',
                  to_char(i.started_at, 'YYYY-MM-DD HH24:MI:SS'), i.batches,
                  coalesce(i.resume_after, 'none'), p_noticed_by),
           'The backend was terminated, crashed or lost its client; its uncommitted work was rolled back.',
           i.table_name
      FROM interrupted AS i;
    GET DIAGNOSTICS v_logged = ROW_COUNT;
    IF v_logged = 0 AND p_reason IS NOT NULL THEN
        INSERT INTO etl.error_log (run_id, procedure_name, kind, sqlstate, message, detail)
        VALUES (p_run_id, p_noticed_by, 'error', 'B2B02',
                format('run %s was interrupted: %s', p_run_id, p_reason),
                'No step of it was executing.');
        v_logged := 1;
    END IF;
    RETURN v_logged;
END
$fn$;

COMMENT ON FUNCTION etl.record_interrupted_run(bigint, text, text) IS
'Marks the steps of a run left running by a backend that died failed and logs them in etl.error_log '
'(B2B02); called under the pipeline lock by etl.start_run, etl.begin_step and etl.abandon_run.';
