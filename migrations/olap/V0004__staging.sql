-- Staging: the source as one extract saw it, copied in a single transaction
-- (one remote snapshot) so that steps committing per batch all read the
-- same state. Unlogged: a crash empties them, and the steps notice.

CREATE UNLOGGED TABLE etl.stage_accounts (LIKE src.accounts);
CREATE UNLOGGED TABLE etl.stage_products (LIKE src.products);
CREATE UNLOGGED TABLE etl.stage_sales_agents (LIKE src.sales_agents);
CREATE UNLOGGED TABLE etl.stage_sales_pipeline (LIKE src.sales_pipeline);

COMMENT ON TABLE etl.stage_accounts IS 'Accounts as read by the last extract (one source snapshot).';
COMMENT ON TABLE etl.stage_products IS 'Products as read by the last extract (one source snapshot).';
COMMENT ON TABLE etl.stage_sales_agents IS 'Sales agents as read by the last extract (one source snapshot).';
COMMENT ON TABLE etl.stage_sales_pipeline IS
'Opportunities as read by the last extract; the fact step reads it in heap-block batches.';
