-- Function: etl.window_keys(p_table text) RETURNS text[]
--     The distinct keys of one source table that the current change window
--     touched: what etl.stage_change_window reads back from the source (as
--     one array parameter, which postgres_fdw sends to the source's index).
-- Tables: reads etl.change_window.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.window_keys(p_table text)
RETURNS text[]
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(array_agg(DISTINCT w.row_key), '{}')
      FROM etl.change_window AS w
     WHERE w.table_name = p_table AND w.row_key IS NOT NULL;
$fn$;

COMMENT ON FUNCTION etl.window_keys(text) IS
'The distinct keys of one source table that the current change window (etl.change_window) touched, as'
' an array.';
