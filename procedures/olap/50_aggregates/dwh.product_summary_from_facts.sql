-- View: dwh.product_summary_from_facts
--     dwh.fact_sales_product_summary computed from the fact table: one row
--     per product version with live deals. The initial load copies it (one
--     pass over the facts); validation compares the table against it, and a
--     filter on product_key is pushed below the GROUP BY. Sums over no value
--     are 0 here, with the count of the values beside them (won_listed_deals,
--     discounted_deals), so the view can say NULL where sum() would.
--     The join with the agents changes no row (every fact has its agent, a
--     foreign key) but gives a filter on one product an index path: one
--     range of the facts' (sales_agent_key, product_key, ...) index per
--     agent, where the product alone has no index (its upkeep would cost
--     every fact write; see V0016).
-- Tables: reads dwh.fact_sales_performance, dwh.dim_sales_agent (both parts, hot and cold).
CREATE OR REPLACE VIEW dwh.product_summary_from_facts AS
SELECT
    f.product_key,
    count(*)::integer AS deals,
    (count(*) FILTER (WHERE NOT f.is_closed))::integer AS open_deals,
    (count(*) FILTER (WHERE f.is_won))::integer AS won_deals,
    (count(*) FILTER (WHERE f.is_closed AND NOT f.is_won))::integer AS lost_deals,
    coalesce(sum(f.close_value) FILTER (WHERE f.is_won), 0)::numeric(30, 2) AS won_value,
    coalesce(sum(f.list_price) FILTER (WHERE f.is_won), 0) AS won_list_value,
    (count(f.list_price) FILTER (WHERE f.is_won))::integer AS won_listed_deals,
    (count(f.close_value) FILTER (WHERE f.is_won AND f.list_price > 0))::integer AS discounted_deals,
    coalesce(sum(f.list_price - f.close_value) FILTER (WHERE f.is_won AND f.list_price > 0), 0) AS discount,
    coalesce(sum((f.list_price - f.close_value) / f.list_price) FILTER (
        WHERE f.is_won AND f.list_price > 0
    ), 0) AS discount_rate,
    coalesce(
        sum(f.close_value) FILTER (WHERE f.is_won AND f.list_price > 0), 0
    )::numeric(30, 2) AS priced_won_value,
    coalesce(sum(f.list_price) FILTER (WHERE f.is_won AND f.list_price > 0), 0) AS priced_list_value
FROM dwh.dim_sales_agent AS a
INNER JOIN dwh.fact_sales_performance AS f ON a.sales_agent_key = f.sales_agent_key
WHERE NOT f.is_deleted
GROUP BY f.product_key;

COMMENT ON VIEW dwh.product_summary_from_facts IS
'dwh.fact_sales_product_summary recomputed from the facts: what the table must equal.';

COMMENT ON COLUMN dwh.product_summary_from_facts.product_key IS 'The product version the deals resolved to.';
COMMENT ON COLUMN dwh.product_summary_from_facts.deals IS 'Live deals, any stage.';
COMMENT ON COLUMN dwh.product_summary_from_facts.open_deals IS 'Live deals not closed.';
COMMENT ON COLUMN dwh.product_summary_from_facts.won_deals IS 'Live deals won.';
COMMENT ON COLUMN dwh.product_summary_from_facts.lost_deals IS 'Live deals lost.';
COMMENT ON COLUMN dwh.product_summary_from_facts.won_value IS 'Sum of the close values of the won deals.';
COMMENT ON COLUMN dwh.product_summary_from_facts.won_list_value IS 'Sum of the list prices of the won deals.';
COMMENT ON COLUMN dwh.product_summary_from_facts.won_listed_deals IS 'Won deals with a list price.';
COMMENT ON COLUMN dwh.product_summary_from_facts.discounted_deals IS
'Won deals with a list price above 0 and a close value.';
COMMENT ON COLUMN dwh.product_summary_from_facts.discount IS 'Sum of list price - close value over those deals.';
COMMENT ON COLUMN dwh.product_summary_from_facts.discount_rate IS
'Sum of (list price - close value) / list price over those deals.';
COMMENT ON COLUMN dwh.product_summary_from_facts.priced_won_value IS
'Sum of the close values of the won deals with a list price above 0.';
COMMENT ON COLUMN dwh.product_summary_from_facts.priced_list_value IS
'Sum of the list prices of the won deals with a list price above 0.';
