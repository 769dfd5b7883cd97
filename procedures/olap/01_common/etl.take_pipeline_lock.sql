-- Function: etl.take_pipeline_lock() RETURNS boolean
--     Tries to take this warehouse's pipeline lock for the session: the
--     session advisory lock on keys (1647469175, 1) that keeps two pipeline
--     steps or run starts from executing at once. Does not wait.
--     etl.release_pipeline_lock gives it back; etl.pipeline_lock_holder
--     says who holds it; etl.take_pipeline_lock_until_commit takes the same
--     lock for one transaction. The key lives in these four functions only.
-- Returns: true when taken (session locks stack: take once, release once).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.take_pipeline_lock()
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.pg_try_advisory_lock(1647469175, 1);
$fn$;

COMMENT ON FUNCTION etl.take_pipeline_lock() IS
'Tries, without waiting, to take the session advisory lock that keeps two pipeline steps or run '
'starts from executing at once; true when taken.';
