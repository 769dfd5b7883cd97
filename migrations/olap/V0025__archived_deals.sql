-- Issue 14: deals the CRM archived stay live in the warehouse, marked with
-- when. The source's public.archive_closed_deals moves closed deals out of
-- sales_pipeline into public.sales_pipeline_archive (captured as
-- sales_pipeline_archive changes); the extract steps read a deal from the
-- archive when sales_pipeline does not hold it, so a deal is deleted only
-- when it is in neither (etl.stage_source, etl.stage_change_window).

CREATE FOREIGN TABLE src.sales_pipeline_archive (
    opportunity_id text,
    sales_agent_id integer,
    product_id integer,
    account_id integer,
    deal_stage text,
    engage_date date,
    close_date date,
    close_value numeric,
    archived_at timestamptz
) SERVER b2b_sales_source OPTIONS (schema_name 'public', table_name 'sales_pipeline_archive');
COMMENT ON FOREIGN TABLE src.sales_pipeline_archive IS
'The source''s archive of closed deals (public.archive_closed_deals), read through postgres_fdw.';

-- A staged deal is live in sales_pipeline (NULL) or archived (when).
ALTER TABLE etl.stage_sales_pipeline ADD COLUMN archived_at timestamptz;
COMMENT ON COLUMN etl.stage_sales_pipeline.archived_at IS
'When the CRM archived the deal (read from its archive); NULL: the deal is in sales_pipeline.';

-- The fact batch starts with the stage's columns (the fact step fills it
-- with the stage's rows, then the resolved keys): made again after them.
DROP TABLE etl.fact_batch;
CREATE UNLOGGED TABLE etl.fact_batch (
    LIKE etl.stage_sales_pipeline,
    hard_reason text,
    soft_rules text[] NOT NULL,
    account_key integer NOT NULL,
    product_key integer NOT NULL,
    sales_agent_key integer NOT NULL,
    deal_stage_key smallint,
    list_price numeric,
    is_won boolean,
    is_closed boolean
);
COMMENT ON TABLE etl.fact_batch IS
'The batch of opportunities the fact step is working on (emptied at each batch).';

-- No default: adding the column rewrites nothing (8.8 million facts at scale
-- 1000), and every fact is live in sales_pipeline until a run says otherwise.
ALTER TABLE dwh.fact_sales_performance ADD COLUMN archived_at timestamptz;
COMMENT ON COLUMN dwh.fact_sales_performance.archived_at IS
'When the CRM archived the deal (moved it out of sales_pipeline into its archive): the deal stays live '
'here, in the aggregates and the reports; NULL while the CRM holds it in sales_pipeline.';
