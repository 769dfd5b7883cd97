-- Function: etl.pipeline_lock_holder() RETURNS integer
--     The backend pid that holds this warehouse's pipeline lock (a session
--     advisory lock on keys 1647469175, 1 in this database, taken by
--     etl.take_pipeline_lock in etl.begin_step), or NULL when free.
-- Tables: reads pg_locks.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.pipeline_lock_holder()
RETURNS integer
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT l.pid
      FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.granted
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                          WHERE d.datname = pg_catalog.current_database())
       AND l.classid = 1647469175::oid AND l.objid = 1::oid AND l.objsubid = 2
     LIMIT 1;
$fn$;

COMMENT ON FUNCTION etl.pipeline_lock_holder() IS
'The backend pid holding this warehouse''s pipeline lock (advisory lock 1647469175, 1), or NULL when '
'it is free.';
