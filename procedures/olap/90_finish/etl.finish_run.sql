-- Procedure: etl.finish_run(p_run_id bigint)
--     Last step of every run: marks it succeeded once all its steps
--     succeeded and its validation passed (unit: etl.close_run).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: writes etl.run.
-- Commits: once.
CREATE OR REPLACE PROCEDURE etl.finish_run(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'etl.finish_run', 'etl.run', 'etl.close_run');
END
$proc$;

COMMENT ON PROCEDURE etl.finish_run(bigint) IS  -- noqa: LT01
'Last step of every run: marks it succeeded once all its steps succeeded and its validation passed '
'(unit etl.close_run); commits.';
