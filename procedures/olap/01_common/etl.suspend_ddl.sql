-- Function: etl.suspend_ddl(p_table regclass) RETURNS integer
--     Before a bulk load into an empty table: records the definitions of its
--     primary and unique keys, foreign keys and other indexes in
--     etl.suspended_ddl and drops them, so rows go in without per-row
--     foreign-key checks or index updates. etl.restore_ddl puts them back,
--     each key or index built by one sort and each foreign key validated by
--     one pass, as pg_restore does. Keys that other tables' foreign keys
--     reference stay. CHECK and NOT NULL constraints stay.
-- Returns: the number of objects set aside.
-- Tables: writes etl.suspended_ddl; alters p_table.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.suspend_ddl(p_table regclass)
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
        SELECT c.conname AS object_name,
               CASE c.contype WHEN 'f' THEN 'foreign key' ELSE 'key' END AS kind,
               format('ALTER TABLE %s ADD CONSTRAINT %I %s', p_table, c.conname,
                      pg_get_constraintdef(c.oid)) AS definition,
               format('ALTER TABLE %s DROP CONSTRAINT %I', p_table, c.conname) AS drop_statement,
               c.contype = 'f' AS drop_first
          FROM pg_constraint AS c
         WHERE c.conrelid = p_table AND c.contype IN ('f', 'p', 'u')
           AND NOT EXISTS (SELECT FROM pg_constraint AS r
                            WHERE r.contype = 'f' AND r.confrelid = p_table
                              AND r.conindid = c.conindid AND c.contype <> 'f')
        UNION ALL
        SELECT ic.relname, 'index', pg_get_indexdef(i.indexrelid),
               format('DROP INDEX %s', i.indexrelid::regclass), false
          FROM pg_index AS i
          JOIN pg_class AS ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = p_table
           AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
         ORDER BY drop_first DESC
    LOOP
        INSERT INTO etl.suspended_ddl (table_name, object_name, kind, definition)
        VALUES (p_table, v_object.object_name, v_object.kind, v_object.definition);
        EXECUTE v_object.drop_statement;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$fn$;

COMMENT ON FUNCTION etl.suspend_ddl(regclass) IS
'Before a bulk load into an empty table, records its keys, foreign keys and indexes in '
'etl.suspended_ddl and drops them; returns how many were set aside.';
