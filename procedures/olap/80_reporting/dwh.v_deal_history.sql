-- View: dwh.v_deal_history
--     Every deal's stage, agent, product, account and value over time: the
--     rows of dwh.fact_deal_history (deals a window touched) and the initial
--     load's seed of the others (dwh.deal_history_seed, for the deals without
--     a row in the table). One row per period,
--     valid_from <= t < valid_to; valid_to infinity while current. A deal's
--     state at the end of day D is its row with valid_from < D + 1 (00:00 UTC)
--     <= valid_to.
--     The as-of functions (dwh.open_pipeline_as_of, dwh.stage_durations,
--     dwh.stage_conversion) read summaries of this view kept by the history
--     step, not the view.
-- Tables: reads dwh.fact_deal_history, dwh.deal_history_seed (over both parts
--     of the facts, hot and cold).
CREATE OR REPLACE VIEW dwh.v_deal_history AS
SELECT
    h.opportunity_id,
    h.valid_from,
    h.valid_to,
    h.deal_stage_key,
    h.sales_agent_key,
    h.product_key,
    h.account_key,
    h.close_value,
    h.engage_date_key,
    h.close_date_key,
    h.is_closed,
    h.is_won,
    h.entered_stage,
    h.txid,
    h.change_id,
    h.run_id
FROM dwh.fact_deal_history AS h
UNION ALL
SELECT
    s.opportunity_id,
    s.valid_from,
    s.valid_to,
    s.deal_stage_key,
    s.sales_agent_key,
    s.product_key,
    s.account_key,
    s.close_value,
    s.engage_date_key,
    s.close_date_key,
    s.is_closed,
    s.is_won,
    s.entered_stage,
    s.txid,
    s.change_id,
    s.run_id
FROM dwh.deal_history_seed AS s
WHERE NOT EXISTS (
        SELECT 1 FROM dwh.fact_deal_history AS h
        WHERE md5(h.opportunity_id) = md5(s.opportunity_id) AND h.opportunity_id = s.opportunity_id
    );

COMMENT ON VIEW dwh.v_deal_history IS
'Every deal''s stage, agent, product, account and value over time (one row per committed change that '
'altered them, valid from its changed_at; the initial load''s seed before): dwh.fact_deal_history and '
'dwh.deal_history_seed together.';
COMMENT ON COLUMN dwh.v_deal_history.opportunity_id IS
'The deal (business key of dwh.fact_sales_performance).';
COMMENT ON COLUMN dwh.v_deal_history.valid_from IS
'When the deal took these values: a changed_at (rows of the table); the engage or close date at 00:00 UTC, '
'else the initial load''s snapshot time (seed rows).';
COMMENT ON COLUMN dwh.v_deal_history.valid_to IS
'When the next row starts or a delete ended the deal; infinity while current.';
COMMENT ON COLUMN dwh.v_deal_history.deal_stage_key IS
'The stage (dim_deal_stage), resolved as the fact step resolves it.';
COMMENT ON COLUMN dwh.v_deal_history.sales_agent_key IS 'The owner (dim_sales_agent).';
COMMENT ON COLUMN dwh.v_deal_history.product_key IS
'The product version (dim_product) in effect at the engage date, as the fact step resolves it.';
COMMENT ON COLUMN dwh.v_deal_history.account_key IS 'The account (dim_account), -1 when none or unresolved.';
COMMENT ON COLUMN dwh.v_deal_history.close_value IS
'The deal''s value (NULL while open, as the CRM holds it).';
COMMENT ON COLUMN dwh.v_deal_history.engage_date_key IS
'The engage date the deal had (dim_date key; not tracked).';
COMMENT ON COLUMN dwh.v_deal_history.close_date_key IS
'The close date the deal had (dim_date key; not tracked).';
COMMENT ON COLUMN dwh.v_deal_history.is_closed IS 'The stage is closed (Won or Lost).';
COMMENT ON COLUMN dwh.v_deal_history.is_won IS 'The stage is Won.';
COMMENT ON COLUMN dwh.v_deal_history.entered_stage IS
'The row starts a stay in its stage (the deal''s previous row, if any, was in another stage).';
COMMENT ON COLUMN dwh.v_deal_history.txid IS
'Lineage: the source transaction that made the row (NULL: a seed row).';
COMMENT ON COLUMN dwh.v_deal_history.change_id IS
'Lineage: that transaction''s last cdc.change_log row for the deal (NULL: a seed row).';
COMMENT ON COLUMN dwh.v_deal_history.run_id IS
'Lineage: the etl run that wrote the row (the initial load, for seed rows).';
