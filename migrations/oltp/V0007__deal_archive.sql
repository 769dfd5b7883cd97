-- The CRM's archive of closed deals. public.archive_closed_deals moves closed
-- deals older than a cut-off out of sales_pipeline into this table, as they
-- were, with when; public.restore_archived_deals brings deals back. Its
-- changes are captured like the four tables' (table_name
-- 'sales_pipeline_archive'): the warehouse reads a deal from here when
-- sales_pipeline no longer holds it, and keeps it live, marked archived.
-- No foreign keys: an archive keeps what was, and must not stop the CRM from
-- deleting an agent, product or account that old deals name (the warehouse
-- keeps its dimension rows, marked deleted); a restore goes through
-- sales_pipeline's own keys.
CREATE TABLE public.sales_pipeline_archive (
    opportunity_id text PRIMARY KEY,
    sales_agent_id integer NOT NULL,
    product_id integer NOT NULL,
    account_id integer,
    deal_stage text NOT NULL,
    engage_date date,
    close_date date,
    close_value numeric,
    archived_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

COMMENT ON TABLE public.sales_pipeline_archive IS
'Closed deals moved out of sales_pipeline by public.archive_closed_deals, as they were; captured, so the '
'warehouse keeps them live, marked archived. public.restore_archived_deals moves deals back.';
COMMENT ON COLUMN public.sales_pipeline_archive.archived_at IS
'When the deal was moved here (the archiving batch''s clock time).';

COMMENT ON COLUMN cdc.change_log.table_name IS
'accounts, products, sales_agents, sales_pipeline or sales_pipeline_archive.';
