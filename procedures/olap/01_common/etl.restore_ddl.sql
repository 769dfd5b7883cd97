-- Function: etl.restore_ddl(p_table regclass) RETURNS integer
--     Puts back what etl.suspend_ddl set aside for p_table (and its parts,
--     if it is partitioned): keys and indexes
--     first (each built by one sort), then foreign keys NOT VALID: enforced
--     from then on for every row written, while the rows already loaded are
--     proven by the run's validation (etl.validate runs VALIDATE CONSTRAINT),
--     so the load does not scan them twice. A partitioned table's foreign
--     keys are added valid instead, one pass each (PostgreSQL 15 refuses
--     NOT VALID on a partitioned table); the validation then finds them
--     valid. Triggers are made again. Then refreshes the table's
--     planner statistics.
-- Returns: the number of objects restored.
-- Raises: what the DDL raises, e.g. 23505 when the loaded rows duplicate a key.
-- Tables: reads and empties etl.suspended_ddl for p_table; alters p_table.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.restore_ddl(p_table regclass)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_object record;
    v_count integer := 0;
BEGIN
    FOR v_object IN
        -- The table's, and its parts' (etl.suspend_ddl sets them aside together).
        SELECT s.table_name, s.object_name, s.kind, s.definition, c.relkind = 'p' AS partitioned
          FROM etl.suspended_ddl AS s
          JOIN pg_class AS c ON c.oid = s.table_name
         WHERE s.table_name IN (SELECT t.relid FROM pg_partition_tree(p_table) AS t UNION SELECT p_table)
         ORDER BY s.kind = 'foreign key', s.suspended_at, s.object_name
    LOOP
        EXECUTE v_object.definition
            || CASE WHEN v_object.kind = 'foreign key' AND v_object.definition !~ 'NOT VALID$'
                         AND NOT v_object.partitioned
                    THEN ' NOT VALID' ELSE '' END;
        DELETE FROM etl.suspended_ddl AS s
         WHERE s.table_name = v_object.table_name AND s.object_name = v_object.object_name;
        v_count := v_count + 1;
    END LOOP;
    EXECUTE format('ANALYZE %s', p_table);
    RETURN v_count;
END
$fn$;

COMMENT ON FUNCTION etl.restore_ddl(regclass) IS
'Puts back the keys, indexes, foreign keys and triggers that etl.suspend_ddl set aside for a table, then '
'analyzes it; returns how many objects were restored.';
