-- The open pipeline (dwh.v_pipeline_by_stage) reads the live open deals
-- only: a partial covering index holds them, so the view reads a quarter of
-- the facts from the index instead of scanning the table. An initial load
-- sets it aside and rebuilds it like the fact table's other indexes.
CREATE INDEX fact_sales_performance_open_idx ON dwh.fact_sales_performance (deal_stage_key, engage_date_key)
INCLUDE (list_price)
WHERE NOT is_closed AND NOT is_deleted;
