-- What a hostile but legal source needs from the warehouse's tables.
--
-- 1. Long keys. The source's one-column primary key on sales_pipeline
--    accepts an opportunity_id as long as a btree entry allows (about 2,700
--    bytes of text that does not compress). Composite btree indexes that put
--    the table name before such a key overflowed that limit: one long key
--    failed every later incremental run at its change window. Keys are
--    indexed here by hash (no size limit; lookups are by equality); the
--    fact table's own key on opportunity_id is the source's, so it fits.
DROP INDEX etl.change_window_key_idx;
CREATE INDEX change_window_row_key_idx ON etl.change_window USING hash (row_key);

ALTER TABLE etl.stage_deleted DROP CONSTRAINT stage_deleted_pkey;
CREATE UNIQUE INDEX stage_deleted_key_idx ON etl.stage_deleted (table_name, md5(row_key));
COMMENT ON INDEX etl.stage_deleted_key_idx IS
'One row per deleted key (a key''s md5: keys may be too long for a btree entry).';

DROP INDEX etl.error_log_quarantine_key_idx;
CREATE INDEX error_log_quarantine_key_idx ON etl.error_log USING hash (business_key)
WHERE kind = 'quarantine';

-- 2. Sums of close values. Each close value fits numeric(18, 2) (the fact
--    step quarantines larger ones), but a group's won value is a sum of
--    many: 10,001 deals at max_close_value overflowed numeric(18, 2) and
--    failed the run. numeric(30, 2) holds 2^31 deals at the largest value.
--    The views over these columns are dropped here and created again, with
--    the new type, from procedures/olap (their files changed with this).
DROP VIEW IF EXISTS dwh.v_sales_by_month;
DROP VIEW IF EXISTS dwh.v_agent_performance;
DROP VIEW IF EXISTS dwh.v_account_performance;
DROP VIEW IF EXISTS dwh.v_product_performance;
DROP VIEW IF EXISTS dwh.v_pipeline_by_stage;
DROP VIEW IF EXISTS dwh.monthly_aggregate_from_facts;
ALTER TABLE dwh.fact_sales_monthly_aggregate ALTER COLUMN won_value TYPE numeric(30, 2);
ALTER TABLE etl.touched_group ALTER COLUMN won_value_delta TYPE numeric(30, 2);
