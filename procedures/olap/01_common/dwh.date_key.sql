-- Function: dwh.date_key(p_date date) RETURNS integer
--     The dim_date key of a date (YYYYMMDD), or -1 (Unknown) for NULL.
--     A plain immutable SQL expression, so the planner inlines it into the
--     query that calls it (which is why it pins no search_path: every name
--     in it is schema-qualified). to_char would not do: it is only stable,
--     and a stable body in an immutable function is called row by row.
CREATE OR REPLACE FUNCTION dwh.date_key(p_date date)
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $fn$
    SELECT coalesce(
        pg_catalog.date_part('year', p_date::timestamp)::integer * 10000
        + pg_catalog.date_part('month', p_date::timestamp)::integer * 100
        + pg_catalog.date_part('day', p_date::timestamp)::integer,
        -1
    );
$fn$;

COMMENT ON FUNCTION dwh.date_key(date) IS
'The dim_date key (YYYYMMDD) of a date, or -1 (Unknown) for NULL; immutable and inlined by the '
'planner.';
