-- View: dwh.stage_duration_from_facts
--     dwh.deal_stage_duration computed from the fact table: the live closed
--     deals with both dates (days_to_close known) per close month, agent,
--     product (business key, -1 for Unknown) and days from engage date to
--     close date. The initial load copies it; validation compares the table
--     against it. close_month_key is the grouping's own key: a filter on it
--     and on the agent reaches the facts' (sales_agent_key, product_key,
--     close_month_key) index through the product's versions.
-- Tables: reads dwh.fact_sales_performance, dwh.dim_product (both parts, hot and cold).
CREATE OR REPLACE VIEW dwh.stage_duration_from_facts AS
SELECT
    f.close_month_key,
    make_date(f.close_month_key / 10000, f.close_month_key / 100 % 100, 1) AS close_month,
    f.sales_agent_key,
    coalesce(p.product_id, -1) AS product_id,
    f.days_to_close AS days,
    count(*)::integer AS deals
FROM dwh.dim_product AS p
INNER JOIN dwh.fact_sales_performance AS f ON p.product_key = f.product_key
WHERE f.is_closed AND NOT f.is_deleted AND f.days_to_close IS NOT NULL AND f.close_month_key <> -1
GROUP BY f.close_month_key, f.sales_agent_key, coalesce(p.product_id, -1), f.days_to_close;

COMMENT ON VIEW dwh.stage_duration_from_facts IS
'dwh.deal_stage_duration recomputed from the facts (with its close month''s date key): what the table must '
'equal.';
COMMENT ON COLUMN dwh.stage_duration_from_facts.close_month_key IS 'Date key of the close month''s first day.';
COMMENT ON COLUMN dwh.stage_duration_from_facts.close_month IS 'First day of the month of the close date.';
COMMENT ON COLUMN dwh.stage_duration_from_facts.sales_agent_key IS 'The deal''s agent.';
COMMENT ON COLUMN dwh.stage_duration_from_facts.product_id IS 'The deal''s product (business key, -1 Unknown).';
COMMENT ON COLUMN dwh.stage_duration_from_facts.days IS 'Close date minus engage date.';
COMMENT ON COLUMN dwh.stage_duration_from_facts.deals IS 'Live closed deals that took that many days.';
