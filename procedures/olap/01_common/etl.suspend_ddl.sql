-- Function: etl.suspend_ddl(p_table regclass) RETURNS integer
--     Before a bulk load into an empty table: records the definitions of its
--     primary and unique keys, foreign keys and other indexes in
--     etl.suspended_ddl and drops them, so rows go in without per-row
--     foreign-key checks or index updates. etl.restore_ddl puts them back,
--     each key or index built by one sort and each foreign key validated by
--     one pass, as pg_restore does. Keys that other tables' foreign keys
--     reference stay. CHECK and NOT NULL constraints stay. The warehouse's
--     own triggers on the table (functions of dwh and etl) are set aside
--     too (a statement-level check would compare every batch with all rows
--     loaded before it); others keep firing. A partitioned table's
--     keys and indexes are its parts' too (dropped and made again on all),
--     and each part's own key and indexes are set aside with them.
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
        -- The table, and its parts if it is partitioned: a part's own key
        -- (not one made from the parent's, conparentid) and own indexes.
        WITH member AS (
            SELECT t.relid AS table_name FROM pg_partition_tree(p_table) AS t
            UNION
            SELECT p_table
        )
        SELECT m.table_name, c.conname AS object_name,
               CASE c.contype WHEN 'f' THEN 'foreign key' ELSE 'key' END AS kind,
               format('ALTER TABLE %s ADD CONSTRAINT %I %s', m.table_name, c.conname,
                      pg_get_constraintdef(c.oid)) AS definition,
               format('ALTER TABLE %s DROP CONSTRAINT %I', m.table_name, c.conname) AS drop_statement,
               c.contype = 'f' AS drop_first
          FROM member AS m
          JOIN pg_constraint AS c ON c.conrelid = m.table_name
         WHERE c.contype IN ('f', 'p', 'u') AND c.conparentid = 0
           AND NOT EXISTS (SELECT 1 FROM pg_constraint AS r
                            WHERE r.contype = 'f' AND r.confrelid = m.table_name
                              AND r.conindid = c.conindid AND c.contype <> 'f')
        UNION ALL
        -- A partitioned table's index is defined ON ONLY the table: made
        -- again without ONLY, it is built on every part.
        SELECT m.table_name, ic.relname, 'index', replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON '),
               format('DROP INDEX %s', i.indexrelid::regclass), false
          FROM member AS m
          JOIN pg_index AS i ON i.indrelid = m.table_name
          JOIN pg_class AS ic ON ic.oid = i.indexrelid
         WHERE NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
           AND NOT EXISTS (SELECT 1 FROM pg_inherits AS h WHERE h.inhrelid = i.indexrelid)
        UNION ALL
        -- Dropped, not disabled: PostgreSQL fills a trigger's transition table
        -- even while it is disabled (measured: a quarter of a batch's insert).
        SELECT m.table_name, t.tgname, 'trigger', pg_get_triggerdef(t.oid),
               format('DROP TRIGGER %I ON %s', t.tgname, m.table_name), false
          FROM member AS m
          JOIN pg_trigger AS t ON t.tgrelid = m.table_name
          JOIN pg_proc AS f ON f.oid = t.tgfoid
         WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgenabled <> 'D'
           -- the warehouse's own checks only: a DBA's trigger (an audit) keeps firing
           AND f.pronamespace IN ('dwh'::regnamespace, 'etl'::regnamespace)
         ORDER BY drop_first DESC
    LOOP
        INSERT INTO etl.suspended_ddl (table_name, object_name, kind, definition)
        VALUES (v_object.table_name, v_object.object_name, v_object.kind, v_object.definition);
        EXECUTE v_object.drop_statement;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$fn$;

COMMENT ON FUNCTION etl.suspend_ddl(regclass) IS
'Before a bulk load into an empty table, records its keys, foreign keys, indexes and triggers in '
'etl.suspended_ddl and drops them; returns how many were set aside.';
