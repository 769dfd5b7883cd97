-- The CRM's archive of closed deals. public.archive_closed_deals moves closed
-- deals older than a cut-off out of sales_pipeline into this table, as they
-- were, with when; public.restore_archived_deals brings deals back. Its
-- changes are captured like the four tables' (table_name
-- 'sales_pipeline_archive'): the warehouse reads a deal from here when
-- sales_pipeline no longer holds it, and keeps it live, marked archived.
-- The foreign keys of sales_pipeline: the CRM cannot delete an agent, product
-- or account its archived deals name, as it cannot for its live ones. Without
-- them a deleted agent's archived deals would stay on the deleted member in
-- the warehouse, while a fresh load, which no longer finds the agent, puts
-- them on Unknown (found by tests/test_model_based.py); and a restore could
-- not bring them back.
CREATE TABLE public.sales_pipeline_archive (
    opportunity_id text PRIMARY KEY,
    sales_agent_id integer NOT NULL REFERENCES public.sales_agents (sales_agent_id),
    product_id integer NOT NULL REFERENCES public.products (product_id),
    account_id integer REFERENCES public.accounts (account_id),
    deal_stage text NOT NULL,
    engage_date date,
    close_date date,
    close_value numeric,
    archived_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Foreign keys are checked on every delete of a parent: index them.
CREATE INDEX sales_pipeline_archive_sales_agent_id_idx ON public.sales_pipeline_archive (sales_agent_id);
CREATE INDEX sales_pipeline_archive_product_id_idx ON public.sales_pipeline_archive (product_id);
CREATE INDEX sales_pipeline_archive_account_id_idx ON public.sales_pipeline_archive (account_id);

COMMENT ON TABLE public.sales_pipeline_archive IS
'Closed deals moved out of sales_pipeline by public.archive_closed_deals, as they were; captured, so the '
'warehouse keeps them live, marked archived. public.restore_archived_deals moves deals back.';
COMMENT ON COLUMN public.sales_pipeline_archive.archived_at IS
'When the deal was moved here: the clock time its archiving batch started.';

COMMENT ON COLUMN cdc.change_log.table_name IS
'accounts, products, sales_agents, sales_pipeline or sales_pipeline_archive.';
