-- Function: etl.take_pipeline_lock_until_commit() RETURNS boolean
--     Tries, without waiting, to take this warehouse's pipeline lock (the
--     advisory lock on keys 1647469175, 1 of etl.take_pipeline_lock) for the
--     current transaction only: PostgreSQL gives it back at commit or
--     rollback, never earlier. For work done in one transaction (starting or
--     abandoning a run): the run row it writes is committed before another
--     caller can take the lock, and an error can never leave it held.
-- Returns: true when taken.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.take_pipeline_lock_until_commit()
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.pg_try_advisory_xact_lock(1647469175, 1);
$fn$;

COMMENT ON FUNCTION etl.take_pipeline_lock_until_commit() IS
'Tries, without waiting, to take the pipeline lock until the end of the current transaction (for run '
'starts and abandons); true when taken.';
