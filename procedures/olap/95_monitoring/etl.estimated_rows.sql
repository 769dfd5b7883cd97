-- Function: etl.estimated_rows(p_table regclass) RETURNS bigint
--     The planner's estimate of a table's rows (pg_class.reltuples, as ANALYZE
--     or VACUUM left it): a size without counting millions of rows. On Citus a
--     distributed table's rows are in its shards, so the estimate is the sum
--     of theirs, read on the workers. -1 when the table was never analysed.
-- Parameters:
--     p_table - the table
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.estimated_rows(p_table regclass)
RETURNS bigint
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_rows bigint;
BEGIN
    IF NOT etl.is_distributed(p_table) THEN
        SELECT c.reltuples::bigint INTO v_rows FROM pg_class AS c WHERE c.oid = p_table;
        RETURN v_rows;
    END IF;
    -- (dynamic: run_command_on_shards exists only where Citus does)
    EXECUTE $q$
        SELECT CASE WHEN bool_or(s.result::bigint < 0) THEN -1 ELSE sum(s.result::bigint) END
          FROM run_command_on_shards($1, 'SELECT reltuples::bigint FROM pg_class WHERE oid = ''%s''::regclass')
               AS s
         WHERE s.success
    $q$ INTO v_rows USING p_table;
    RETURN v_rows;
END
$fn$;

COMMENT ON FUNCTION etl.estimated_rows(regclass) IS
'The planner''s estimate of a table''s rows (the sum of its shards'' on Citus); -1 when never analysed.';
