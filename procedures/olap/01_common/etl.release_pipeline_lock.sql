-- Function: etl.release_pipeline_lock() RETURNS boolean
--     Gives back the pipeline lock taken by etl.take_pipeline_lock.
-- Returns: false (with a WARNING from PostgreSQL) when the session did not hold it.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.release_pipeline_lock()
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.pg_advisory_unlock(1647469175, 1);
$fn$;

COMMENT ON FUNCTION etl.release_pipeline_lock() IS
'Gives back the pipeline lock taken by etl.take_pipeline_lock; false when the session did not hold '
'it.';
