-- Function: etl.assert_step_executor(p_loading_metadata_id bigint, p_unit text) RETURNS void
--     The guard every unit function calls first. A unit may only do the work
--     of the step that etl.begin_step opened for it in this session: the
--     step is one of its run's pipeline whose unit (etl.pipeline_step) is
--     p_unit, the step and its run are running, this backend opened the step
--     (etl.loading_metadata.executor_pid) and holds the pipeline lock.
--     Anything else (an old or foreign step id, another step's unit, a step
--     another backend executes, no step at all) is refused before the unit
--     reads or writes anything: a unit run out of band could advance the
--     applied snapshot or rewrite the star schema behind the pipeline's back.
-- Parameters:
--     p_loading_metadata_id - the step the unit was called for
--     p_unit                - the calling unit's name, e.g. 'etl.stage_change_window';
--                             NULL for etl.close_step, which closes any step
--                             (also the last, whose unit has just ended the run)
-- Raises: 55000 (object not in prerequisite state) naming the unit and the step.
-- Tables: reads etl.loading_metadata, etl.run, etl.pipeline_step, pg_locks.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.assert_step_executor(p_loading_metadata_id bigint, p_unit text)
RETURNS void
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_problem text;
BEGIN
    SELECT CASE
               WHEN p_unit IS NOT NULL AND s.unit IS DISTINCT FROM p_unit
                   THEN format('it is not the unit of step %s of the %s pipeline', m.step, r.pipeline)
               WHEN m.status <> 'running' OR (r.status <> 'running' AND p_unit IS NOT NULL)
                   THEN format('step %s of run %s is %s (run %s)', m.step, r.run_id, m.status, r.status)
               WHEN m.executor_pid IS DISTINCT FROM pg_backend_pid()
                    OR etl.pipeline_lock_holder() IS DISTINCT FROM pg_backend_pid()
                   THEN format('this session (backend pid %s) is not executing step %s of run %s',
                               pg_backend_pid(), m.step, r.run_id)
           END
      INTO v_problem
      FROM etl.loading_metadata AS m
      JOIN etl.run AS r ON r.run_id = m.run_id
      LEFT JOIN etl.pipeline_step AS s ON s.pipeline = r.pipeline AND s.step = m.step
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    IF NOT FOUND THEN
        v_problem := format('step %s does not exist', coalesce(p_loading_metadata_id::text, 'NULL'));
    END IF;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION '% runs only inside its own step of the caller''s running run: %',
            coalesce(p_unit, 'etl.close_step'), v_problem
            USING ERRCODE = '55000',
                  HINT = 'Call the step''s procedure (see SELECT * FROM etl.pipeline_step), or the whole '
                         'pipeline: CALL etl.run_incremental_update();';
    END IF;
END
$fn$;

COMMENT ON FUNCTION etl.assert_step_executor(bigint, text) IS
'Guard of every unit function: refuses (55000) a call that is not for the running step this session '
'opened and executes, with that unit per etl.pipeline_step.';
