-- Triggers: change capture on the four source tables (cdc.capture_changes,
-- cdc.capture_truncate). Statement level with transition tables: a bulk
-- statement pays one trigger call. Redeployed with the functions they call.
CREATE OR REPLACE TRIGGER capture_insert AFTER INSERT ON public.accounts
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('account_id');
CREATE OR REPLACE TRIGGER capture_update AFTER UPDATE ON public.accounts
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('account_id');
CREATE OR REPLACE TRIGGER capture_delete AFTER DELETE ON public.accounts
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('account_id');
CREATE OR REPLACE TRIGGER capture_truncate AFTER TRUNCATE ON public.accounts
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_truncate();

CREATE OR REPLACE TRIGGER capture_insert AFTER INSERT ON public.products
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('product_id', 'images');
CREATE OR REPLACE TRIGGER capture_update AFTER UPDATE ON public.products
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('product_id', 'images');
CREATE OR REPLACE TRIGGER capture_delete AFTER DELETE ON public.products
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('product_id', 'images');
CREATE OR REPLACE TRIGGER capture_truncate AFTER TRUNCATE ON public.products
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_truncate();

CREATE OR REPLACE TRIGGER capture_insert AFTER INSERT ON public.sales_agents
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('sales_agent_id');
CREATE OR REPLACE TRIGGER capture_update AFTER UPDATE ON public.sales_agents
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('sales_agent_id');
CREATE OR REPLACE TRIGGER capture_delete AFTER DELETE ON public.sales_agents
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('sales_agent_id');
CREATE OR REPLACE TRIGGER capture_truncate AFTER TRUNCATE ON public.sales_agents
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_truncate();

CREATE OR REPLACE TRIGGER capture_insert AFTER INSERT ON public.sales_pipeline
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('opportunity_id');
CREATE OR REPLACE TRIGGER capture_update AFTER UPDATE ON public.sales_pipeline
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('opportunity_id');
CREATE OR REPLACE TRIGGER capture_delete AFTER DELETE ON public.sales_pipeline
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_changes('opportunity_id');
CREATE OR REPLACE TRIGGER capture_truncate AFTER TRUNCATE ON public.sales_pipeline
FOR EACH STATEMENT EXECUTE FUNCTION cdc.capture_truncate();

CREATE OR REPLACE TRIGGER purge_consumed AFTER INSERT OR UPDATE ON cdc.consumer
FOR EACH ROW EXECUTE FUNCTION cdc.purge_consumed();
