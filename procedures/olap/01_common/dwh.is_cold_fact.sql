-- Function: dwh.is_cold_fact(p_is_closed boolean, p_close_date_key integer,
--                            p_cold_before date) RETURNS boolean
--     The one rule of where a fact is stored: cold when its deal is closed
--     and closed before the horizon (a known close date, p_close_date_key
--     not -1, before p_cold_before); hot otherwise, every open deal and
--     every deal when there is no horizon (p_cold_before NULL). Every
--     writer of dwh.fact_sales_performance places a fact by it, with
--     etl.fact_storage.cold_before; the horizon move applies a new horizon.
--     Never NULL. Immutable and inlined: on the columns, an index condition
--     on close_date_key.
CREATE OR REPLACE FUNCTION dwh.is_cold_fact(p_is_closed boolean, p_close_date_key integer, p_cold_before date)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $fn$
    SELECT coalesce(p_is_closed, false)
           AND p_close_date_key >= 0
           AND p_close_date_key < coalesce(dwh.date_key(p_cold_before), 0);
$fn$;

COMMENT ON FUNCTION dwh.is_cold_fact(boolean, integer, date) IS
'Where a fact is stored: true (the cold part) for a deal closed before the horizon p_cold_before, '
'false for every other (open deals, unknown close dates, no horizon).';
