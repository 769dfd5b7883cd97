-- Procedure: etl.validate_run(p_run_id bigint)
--     Validates the run (etl.validate) and keeps the results; when a check
--     fails, the step and the run fail with SQLSTATE B2B01, naming the
--     failed checks (unit: etl.check_run).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: writes etl.validation_result.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE etl.validate_run(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'etl.validate_run', 'etl.validation_result', 'etl.check_run');
END
$proc$;

COMMENT ON PROCEDURE etl.validate_run(bigint) IS  -- noqa: LT01
'Step: validates the run (etl.validate) and keeps the results; a failed check fails the step and the '
'run with SQLSTATE B2B01 (unit etl.check_run).';
