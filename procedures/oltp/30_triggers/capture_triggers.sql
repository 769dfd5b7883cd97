-- Triggers: change capture on the four source tables (cdc.capture_changes,
-- cdc.capture_truncate) and the purge on cdc.consumer (cdc.purge_consumed).
-- Statement level with transition tables: a bulk statement pays one trigger
-- call. Products are captured with their images (their versions follow each
-- transaction). Redeployed with the functions they call.
DO $triggers$
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT * FROM (VALUES
            ('accounts', 'account_id', NULL),
            ('products', 'product_id', 'images'),
            ('sales_agents', 'sales_agent_id', NULL),
            ('sales_pipeline', 'opportunity_id', NULL)
        ) AS t (table_name, key_column, images)
    LOOP
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_insert AFTER INSERT ON public.%I
             REFERENCING NEW TABLE AS new_rows
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes(%L%s)',
            v.table_name, v.key_column, coalesce(', ' || quote_literal(v.images), ''));
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_update AFTER UPDATE ON public.%I
             REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes(%L%s)',
            v.table_name, v.key_column, coalesce(', ' || quote_literal(v.images), ''));
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_delete AFTER DELETE ON public.%I
             REFERENCING OLD TABLE AS old_rows
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes(%L)',
            v.table_name, v.key_column);
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_truncate AFTER TRUNCATE ON public.%I
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_truncate()',
            v.table_name);
    END LOOP;
END
$triggers$;

CREATE OR REPLACE TRIGGER purge_consumed AFTER INSERT OR UPDATE ON cdc.consumer
FOR EACH ROW EXECUTE FUNCTION cdc.purge_consumed();
