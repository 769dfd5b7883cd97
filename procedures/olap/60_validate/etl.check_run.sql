-- Function: etl.check_run(p_loading_metadata_id bigint) RETURNS text
--     Unit of etl.validate_run: runs etl.validate for the step's run.
-- Returns: NULL when every check passed; otherwise 'validation failed: '
--     and the failed checks (etl.run_step then keeps the results and fails
--     the step).
-- Tables: writes etl.validation_result.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION etl.check_run(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run_id bigint;
    v_checks bigint;
    v_failed text;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'etl.check_run');
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT count(*), string_agg(v.check_name, '; ') FILTER (WHERE NOT v.passed)
      INTO v_checks, v_failed
      FROM etl.validate(v_run_id) AS v;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_checks, p_inserted => v_checks);
    RETURN 'validation failed: ' || v_failed;
END
$fn$;

COMMENT ON FUNCTION etl.check_run(bigint) IS
'Unit of etl.validate_run: runs etl.validate for the step''s run; NULL when every check passed, else '
'the failed checks.';
