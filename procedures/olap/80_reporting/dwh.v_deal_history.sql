-- View: dwh.v_deal_history
--     Every deal's stage, agent, product, account and value over time: the
--     rows of dwh.fact_deal_history (deals a window touched) and the initial
--     load's seed of the others (dwh.deal_history_seed). One row per period,
--     valid_from <= t < valid_to; valid_to infinity while current. A deal's
--     state at the end of day D is its row with valid_from < D + 1 (00:00 UTC)
--     <= valid_to.
--     The as-of functions (dwh.open_pipeline_as_of, dwh.stage_durations,
--     dwh.stage_conversion) read summaries of this view kept by the history
--     step, not the view.
-- Tables: reads dwh.fact_deal_history, dwh.deal_history_seed.
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
FROM dwh.deal_history_seed AS s;

COMMENT ON VIEW dwh.v_deal_history IS
'Every deal''s stage, agent, product, account and value over time (one row per committed change that '
'altered them, valid from its changed_at; the initial load''s seed before): dwh.fact_deal_history and '
'dwh.deal_history_seed together.';
