-- View: dwh.monthly_aggregate_from_facts
--     The monthly aggregate computed from the fact table: one row per close
--     month, sales agent and product version over closed, live deals. The
--     aggregate step copies it; validation compares the table against it;
--     filters on its grouping columns are pushed below the GROUP BY, onto
--     the fact table's (sales_agent_key, product_key, close_month_key)
--     index, so one group is recomputed from its own deals only.
-- Tables: reads dwh.fact_sales_performance (both parts, hot and cold).
CREATE OR REPLACE VIEW dwh.monthly_aggregate_from_facts AS
SELECT
    f.close_month_key AS month_date_key,
    f.sales_agent_key,
    f.product_key,
    (count(*) FILTER (WHERE f.is_won))::integer AS won_deals,
    (count(*) FILTER (WHERE NOT f.is_won))::integer AS lost_deals,
    coalesce(sum(f.close_value) FILTER (WHERE f.is_won), 0)::numeric(30, 2) AS won_value
FROM dwh.fact_sales_performance AS f
WHERE f.is_closed AND NOT f.is_deleted
GROUP BY f.close_month_key, f.sales_agent_key, f.product_key;

COMMENT ON VIEW dwh.monthly_aggregate_from_facts IS
'dwh.fact_sales_monthly_aggregate recomputed from the facts: what the table must equal.';

COMMENT ON COLUMN dwh.monthly_aggregate_from_facts.month_date_key IS
'date_key of the first day of the close month (YYYYMMDD); -1 for deals closed without a close date.';
COMMENT ON COLUMN dwh.monthly_aggregate_from_facts.sales_agent_key IS 'The sales agent who owns the deals.';
COMMENT ON COLUMN dwh.monthly_aggregate_from_facts.product_key IS 'The product version the deals resolved to.';
COMMENT ON COLUMN dwh.monthly_aggregate_from_facts.won_deals IS 'Closed, live deals won in the month.';
COMMENT ON COLUMN dwh.monthly_aggregate_from_facts.lost_deals IS 'Closed, live deals lost in the month.';
COMMENT ON COLUMN dwh.monthly_aggregate_from_facts.won_value IS
'Sum of the close values of the deals won in the month; 0 when none were won.';
