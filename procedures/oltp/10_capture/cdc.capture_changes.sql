-- Trigger function: cdc.capture_changes() (statement level, with transition tables)
--     Writes one cdc.change_log row per row an INSERT, UPDATE or DELETE
--     statement touched: the operation and the row's key; the writing
--     transaction's id and the clock time come from the log's defaults. An
--     UPDATE that changes a key is logged as D of the old key and I of the
--     new one. The row itself is not copied (the warehouse reads the rows
--     of a window's keys from the source, in the snapshot that closes the
--     window), except where the warehouse needs every transaction's own
--     version of the row: with TG_ARGV[1] = 'images' (products: SCD2), the
--     new image of I and U goes into row_data.
--     Inserts of a transaction that emptied the table first (TRUNCATE:
--     generate, import-csv) are not logged: the T change already tells the
--     warehouse to reload.
-- Arguments: TG_ARGV[0] - the table's key column; TG_ARGV[1] - 'images' or absent.
-- Security: SECURITY DEFINER, so the application writes the log only
--     through this trigger; search_path pinned; the key column is quoted
--     with %I.
CREATE OR REPLACE FUNCTION cdc.capture_changes()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_key text := TG_ARGV[0];
    v_image text := CASE WHEN TG_NARGS > 1 AND TG_ARGV[1] = 'images' THEN 'to_jsonb(r)' ELSE 'NULL::jsonb' END;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM cdc.source_replaced AS x WHERE x.txid = pg_current_xact_id()) THEN
            RETURN NULL;
        END IF;
        EXECUTE format(
            'INSERT INTO cdc.change_log (table_name, operation, row_key, row_data)
             SELECT %L, ''I'', r.%I::text, %s FROM new_rows AS r',
            TG_TABLE_NAME, v_key, v_image);
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format(
            'INSERT INTO cdc.change_log (table_name, operation, row_key)
             SELECT %L, ''D'', r.%I::text FROM old_rows AS r',
            TG_TABLE_NAME, v_key);
    ELSE
        EXECUTE format(
            'INSERT INTO cdc.change_log (table_name, operation, row_key, row_data)
             SELECT %1$L, CASE WHEN o.k IS NULL THEN ''I'' ELSE ''U'' END, n.k, n.j
               FROM (SELECT r.%2$I::text AS k, %3$s AS j FROM new_rows AS r) AS n
               LEFT JOIN (SELECT r.%2$I::text AS k FROM old_rows AS r) AS o ON o.k = n.k
             UNION ALL
             SELECT %1$L, ''D'', o.k, NULL
               FROM (SELECT r.%2$I::text AS k FROM old_rows AS r) AS o
              WHERE NOT EXISTS (SELECT FROM new_rows AS r WHERE r.%2$I::text = o.k)',
            TG_TABLE_NAME, v_key, v_image);
    END IF;
    RETURN NULL;
END
$fn$;
