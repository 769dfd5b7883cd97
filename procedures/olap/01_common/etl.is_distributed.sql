-- Function: etl.is_distributed(p_table regclass) RETURNS boolean
--     Whether a table is distributed by Citus (hash-distributed: its rows
--     live in shards on the workers, the coordinator's table is empty).
--     False on a server without Citus. The routines that address a table's
--     rows by their place on disk (the fact step's batches are heap-block
--     ranges of the staging) ask it, since a distributed table has no such
--     places on the coordinator.
-- Parameters:
--     p_table - the table
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.is_distributed(p_table regclass)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_distributed boolean;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    -- (dynamic: the Citus catalog exists only where the extension does)
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                             WHERE logicalrelid = $1 AND partmethod = ''h'')'
       INTO v_distributed USING p_table;
    RETURN v_distributed;
END
$fn$;

COMMENT ON FUNCTION etl.is_distributed(regclass) IS
'Whether a table is hash-distributed by Citus; false on a server without Citus.';
