-- View: dwh.open_pipeline_from_facts
--     dwh.fact_sales_open_pipeline computed from the fact table: the live
--     open deals counted per stage and engage day, with their list value,
--     read from their partial covering index (fact_sales_performance_open_idx);
--     a filter on the stage and day is pushed below the GROUP BY onto it.
-- Tables: reads dwh.fact_sales_performance (both parts, hot and cold).
CREATE OR REPLACE VIEW dwh.open_pipeline_from_facts AS
SELECT
    f.deal_stage_key,
    f.engage_date_key,
    count(*)::integer AS open_deals,
    coalesce(sum(f.list_price), 0) AS list_value
FROM dwh.fact_sales_performance AS f
WHERE NOT f.is_closed AND NOT f.is_deleted
GROUP BY f.deal_stage_key, f.engage_date_key;

COMMENT ON VIEW dwh.open_pipeline_from_facts IS
'dwh.fact_sales_open_pipeline recomputed from the facts: what the table must equal.';

COMMENT ON COLUMN dwh.open_pipeline_from_facts.deal_stage_key IS 'The open deals'' stage.';
COMMENT ON COLUMN dwh.open_pipeline_from_facts.engage_date_key IS 'Their engage date; -1 for none.';
COMMENT ON COLUMN dwh.open_pipeline_from_facts.open_deals IS 'Live open deals of the stage engaged that day.';
COMMENT ON COLUMN dwh.open_pipeline_from_facts.list_value IS 'Sum of their list prices.';
