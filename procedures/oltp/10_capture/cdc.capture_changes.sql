-- Trigger function: cdc.capture_changes() (statement level, with transition tables)
--     Writes one cdc.change_log row per row an INSERT, UPDATE or DELETE
--     statement touched: the operation, the row's key, its image (new for
--     I and U, old for D). The writing transaction's id and the clock time
--     come from the log's defaults. An UPDATE that changes a key is logged
--     as D of the old key and I of the new one.
--     Inserts of a transaction that emptied the table first (TRUNCATE:
--     generate, import-csv) are not logged: the T change already tells the
--     warehouse to reload.
-- Arguments: TG_ARGV[0] - the table's key column.
-- Security: SECURITY DEFINER, so the application writes the log only
--     through this trigger; search_path pinned.
CREATE OR REPLACE FUNCTION cdc.capture_changes()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_key text := TG_ARGV[0];
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM cdc.source_replaced AS r WHERE r.txid = pg_current_xact_id()) THEN
            RETURN NULL;
        END IF;
        INSERT INTO cdc.change_log (table_name, operation, row_key, row_data)
        SELECT TG_TABLE_NAME, 'I', n.j ->> v_key, n.j
          FROM (SELECT to_jsonb(r) AS j FROM new_rows AS r) AS n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO cdc.change_log (table_name, operation, row_key, row_data)
        SELECT TG_TABLE_NAME, 'D', o.j ->> v_key, o.j
          FROM (SELECT to_jsonb(r) AS j FROM old_rows AS r) AS o;
    ELSE
        WITH n AS (SELECT to_jsonb(r) AS j, to_jsonb(r) ->> v_key AS k FROM new_rows AS r),
             o AS (SELECT to_jsonb(r) AS j, to_jsonb(r) ->> v_key AS k FROM old_rows AS r)
        INSERT INTO cdc.change_log (table_name, operation, row_key, row_data)
        SELECT TG_TABLE_NAME, 'D', o.k, o.j FROM o WHERE NOT EXISTS (SELECT FROM n WHERE n.k = o.k)
        UNION ALL
        SELECT TG_TABLE_NAME, CASE WHEN EXISTS (SELECT FROM o WHERE o.k = n.k) THEN 'U' ELSE 'I' END,
               n.k, n.j
          FROM n;
    END IF;
    RETURN NULL;
END
$fn$;
