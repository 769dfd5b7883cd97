-- Function: etl.restore_ddl(p_table regclass) RETURNS integer
--     Puts back what etl.suspend_ddl set aside for p_table: keys and indexes
--     first (each built by one sort), then foreign keys (each validated by
--     one pass). Then refreshes the table's planner statistics.
-- Returns: the number of objects restored.
-- Raises: what the DDL raises, e.g. 23505 when the loaded rows duplicate a key.
-- Tables: reads and empties etl.suspended_ddl for p_table; alters p_table.
CREATE OR REPLACE FUNCTION etl.restore_ddl(p_table regclass)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_object record;
    v_count integer := 0;
BEGIN
    FOR v_object IN
        SELECT s.object_name, s.definition
          FROM etl.suspended_ddl AS s
         WHERE s.table_name = p_table
         ORDER BY s.kind = 'foreign key', s.suspended_at, s.object_name
    LOOP
        EXECUTE v_object.definition;
        DELETE FROM etl.suspended_ddl AS s
         WHERE s.table_name = p_table AND s.object_name = v_object.object_name;
        v_count := v_count + 1;
    END LOOP;
    EXECUTE format('ANALYZE %s', p_table);
    RETURN v_count;
END
$fn$;

COMMENT ON FUNCTION etl.restore_ddl(regclass) IS
'Puts back the keys, indexes and foreign keys that etl.suspend_ddl set aside for a table, then '
'analyzes it; returns how many objects were restored.';
