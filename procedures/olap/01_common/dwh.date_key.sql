-- Function: dwh.date_key(p_date date) RETURNS integer
--     The dim_date key of a date (YYYYMMDD), or -1 (Unknown) for NULL.
--     A plain SQL expression, so the planner inlines it (which is why it
--     pins no search_path: every name in it is schema-qualified).
CREATE OR REPLACE FUNCTION dwh.date_key(p_date date)
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $fn$
    SELECT coalesce(pg_catalog.to_char(p_date, 'YYYYMMDD')::integer, -1);
$fn$;
