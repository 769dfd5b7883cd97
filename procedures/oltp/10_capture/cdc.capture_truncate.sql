-- Trigger function: cdc.capture_truncate() (statement level, on TRUNCATE)
--     Logs a T change for the emptied table and remembers the transaction
--     in cdc.source_replaced, so that the capture triggers (cdc.capture_<table>) do not log its
--     bulk re-inserts one by one. The warehouse refuses to apply a window
--     with a T change: the source was replaced, an initial load is due.
-- Security: SECURITY DEFINER; search_path pinned.
CREATE OR REPLACE FUNCTION cdc.capture_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO cdc.source_replaced (txid) VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
    INSERT INTO cdc.change_log (table_name, operation) VALUES (TG_TABLE_NAME, 'T');
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION cdc.capture_truncate() IS
'Trigger function on TRUNCATE of a source table: logs a T change in cdc.change_log and marks the '
'transaction in cdc.source_replaced so its bulk re-inserts are not logged.';
