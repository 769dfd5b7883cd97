-- Procedure: etl.abandon_run(p_run_id bigint)
--     Gives up a run that is between steps and will not go on, and commits:
--     see etl.mark_run_abandoned, which does the work with the owner's rights.
-- Parameters:
--     p_run_id - the running run to give up
-- Tables: writes etl.run (through etl.mark_run_abandoned).
-- Commits: yes.
CREATE OR REPLACE PROCEDURE etl.abandon_run(p_run_id bigint)
LANGUAGE plpgsql
AS $proc$
BEGIN
    PERFORM etl.mark_run_abandoned(p_run_id);
    COMMIT;
    RAISE NOTICE 'run % abandoned', p_run_id;
END
$proc$;

COMMENT ON PROCEDURE etl.abandon_run(bigint) IS  -- noqa: LT01
'Gives up a run that is between steps (marks it failed in etl.run) so a new run can start; refused '
'with 55P03 while one of its steps executes; commits.';
