-- Issue 13: stage durations are kept from the facts, not from the deal
-- history's closings.
--
-- dwh.deal_stage_duration (V0019) counted every row of the history that
-- entered Won or Lost. Trying the real CRM export as a new user showed what
-- that counts wrong: a deleted deal's closing stayed; a deal deleted and
-- inserted again, or reopened and closed again, counted once per closing; a
-- corrected engage or close date never reached it (the history does not
-- track dates). What an analyst asks is how long the deals that closed took:
-- each live closed deal once, with its current dates. That is a grouping of
-- the facts, so the histogram becomes one more summary kept by the
-- aggregate's exact deltas (dwh.fold_fact_contributions: old contribution
-- out, new in; applied with the monthly aggregate in one transaction;
-- built from the facts by an initial load; checked by etl.validate against
-- dwh.stage_duration_from_facts).

COMMENT ON TABLE dwh.deal_stage_duration IS
'Summary for dwh.stage_durations: the live closed deals (Won or Lost, with an engage and a close date) per '
'month of their close date, agent, product and days from engage date to close date; kept by exact deltas with '
'the monthly aggregate (dwh.stage_duration_from_facts is what it must equal).';
COMMENT ON COLUMN dwh.deal_stage_duration.sales_agent_key IS 'The deal''s agent.';
COMMENT ON COLUMN dwh.deal_stage_duration.product_id IS 'The deal''s product (business key, -1 Unknown).';
COMMENT ON COLUMN dwh.deal_stage_duration.deals IS 'How many live closed deals took that many days.';

-- The pending deltas, as etl.touched_group holds the monthly aggregate's.
CREATE TABLE etl.touched_duration (
    close_month_key integer NOT NULL,
    sales_agent_key integer NOT NULL,
    product_id integer NOT NULL,
    days integer NOT NULL,
    deals integer NOT NULL,
    refreshed_by_run bigint,
    PRIMARY KEY (close_month_key, sales_agent_key, product_id, days)
);
COMMENT ON TABLE etl.touched_duration IS
'Groups of dwh.deal_stage_duration (close month as a date key) that changed deals left or entered, with the '
'deals they add: pending (refreshed_by_run NULL) until the aggregate step applies them, then kept for that '
'run''s validation.';
