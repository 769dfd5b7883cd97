-- Function: etl.consumer_name() RETURNS text
--     The name this warehouse reports its applied position under in the
--     source's cdc.consumer: etl.config consumer_name when set, otherwise
--     the warehouse database's own name, so that every warehouse on one
--     source (a second one, a copy, a restored backup) is a consumer of its
--     own.
-- Tables: reads etl.config.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.consumer_name()
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(nullif(btrim(etl.config_value('consumer_name')), ''), current_database());
$fn$;

COMMENT ON FUNCTION etl.consumer_name() IS
'This warehouse''s name in the source''s cdc.consumer: etl.config consumer_name, or when empty the '
'database''s own name.';
