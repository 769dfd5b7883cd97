-- Triggers: change capture on the four source tables and the deals' archive
-- (cdc.capture_<table>, cdc.capture_truncate) and the purge on cdc.consumer
-- (cdc.purge_consumed).
-- Statement level with transition tables: a bulk statement pays one trigger
-- call. Redeployed with the functions they call.
DO $triggers$
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT * FROM (VALUES
            ('accounts'), ('products'), ('sales_agents'), ('sales_pipeline'), ('sales_pipeline_archive')
        ) AS t (table_name)
    LOOP
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_insert AFTER INSERT ON public.%I
             REFERENCING NEW TABLE AS new_rows
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.%I()',
            v.table_name, 'capture_' || v.table_name);
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_update AFTER UPDATE ON public.%I
             REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.%I()',
            v.table_name, 'capture_' || v.table_name);
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_delete AFTER DELETE ON public.%I
             REFERENCING OLD TABLE AS old_rows
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.%I()',
            v.table_name, 'capture_' || v.table_name);
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER capture_truncate AFTER TRUNCATE ON public.%I
             FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_truncate()',
            v.table_name);
    END LOOP;
END
$triggers$;

CREATE OR REPLACE TRIGGER purge_consumed AFTER INSERT OR UPDATE ON cdc.consumer
FOR EACH ROW EXECUTE FUNCTION cdc.purge_consumed();
