-- Issue 13, first half: summary tables for the reporting views that read
-- every live fact (v_product_performance, v_account_performance,
-- v_pipeline_by_stage). Each summary is kept exactly as the monthly
-- aggregate is, by one mechanism:
--   - the fact step writes what each fact it changes took from (-1) and
--     gives to (+1) the warehouse into etl.fact_contribution, now wide
--     enough for every grain (account, stage, engage and close dates, list
--     price, days to close, whether the fact was live);
--   - dwh.fold_fact_contributions folds each batch's contributions into the
--     pending deltas of every grain (etl.touched_group and the etl.touched_*
--     tables below), in the batch's transaction;
--   - the aggregate step (dwh.rebuild_monthly_aggregate) adds the pending
--     deltas to every summary, removes the groups left empty and marks the
--     window applied, all in one transaction: a window is applied to every
--     summary or to none. An initial load builds each summary from the
--     facts, one set-based statement each (dwh.build_summaries).
-- The agent grain (and manager and regional office, attributes of the
-- agent, SCD1) is the monthly aggregate's: v_agent_performance reads it.
--
-- Measures that are not sums stay exact:
--   - averages are kept as a sum and a count (days to close of won deals,
--     discounts), divided when read, as avg() does;
--   - a sum that is NULL over no value (the list value of won deals) keeps
--     the count of values it sums, so the view says NULL where sum() would;
--   - the median and mean age of the open pipeline come from counts per
--     (stage, engage day), as v_pipeline_by_stage computed them before;
--   - the first engage date and last close date of an account are kept with
--     the number of live deals on that day. A delta that adds an earlier
--     (later) day moves the extreme there; one that takes the last deal of
--     the extreme day away, with no new day beyond it, leaves the extreme
--     unknown: the apply recounts just those accounts from their facts
--     (the fact table's account index). Exact, and the recount is rare: the
--     deals on an account's extreme day must all go in one window.

-- The contributions, wide enough for every summary. Emptied at each batch;
-- emptied here too, so the new NOT NULL columns need no default.
TRUNCATE etl.fact_contribution;
ALTER TABLE etl.fact_contribution
ADD COLUMN account_key integer NOT NULL,
ADD COLUMN deal_stage_key smallint NOT NULL,
ADD COLUMN engage_date_key integer NOT NULL,
ADD COLUMN close_date_key integer NOT NULL,
ADD COLUMN list_price numeric,
ADD COLUMN days_to_close integer,
ADD COLUMN is_live boolean NOT NULL;
COMMENT ON TABLE etl.fact_contribution IS
'The current fact batch''s old (-1) and new (+1) facts, as the aggregate and the summaries see them (emptied at '
'each batch).';
COMMENT ON COLUMN etl.fact_contribution.is_closed IS 'The fact is closed (won or lost).';
COMMENT ON COLUMN etl.fact_contribution.is_live IS
'The fact counted: not deleted (a deleted fact contributes nothing, in or out).';

-- The summaries.
CREATE TABLE dwh.fact_sales_product_summary (
    product_key integer PRIMARY KEY REFERENCES dwh.dim_product (product_key),
    deals integer NOT NULL,
    open_deals integer NOT NULL,
    won_deals integer NOT NULL,
    lost_deals integer NOT NULL,
    won_value numeric(30, 2) NOT NULL,
    won_list_value numeric NOT NULL,
    won_listed_deals integer NOT NULL,
    discounted_deals integer NOT NULL,
    discount numeric NOT NULL,
    discount_rate numeric NOT NULL,
    priced_won_value numeric(30, 2) NOT NULL,
    priced_list_value numeric NOT NULL,
    run_id bigint NOT NULL REFERENCES etl.run (run_id)
);
COMMENT ON TABLE dwh.fact_sales_product_summary IS
'One row per product version with live deals: the measures of dwh.v_product_performance as sums and counts '
'(kept by exact deltas with the monthly aggregate; dwh.product_summary_from_facts is what it must equal).';
COMMENT ON COLUMN dwh.fact_sales_product_summary.product_key IS 'The product version the deals resolved to.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.deals IS 'Live deals, any stage (above 0: an empty group has no row).';
COMMENT ON COLUMN dwh.fact_sales_product_summary.open_deals IS 'Live deals not closed.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.won_deals IS 'Live deals won.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.lost_deals IS 'Live deals lost (closed, not won).';
COMMENT ON COLUMN dwh.fact_sales_product_summary.won_value IS 'Sum of the close values of the won deals.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.won_list_value IS
'Sum of the list prices of the won deals (0 when none has one: see won_listed_deals).';
COMMENT ON COLUMN dwh.fact_sales_product_summary.won_listed_deals IS
'Won deals with a list price: the values won_list_value sums (none: the view shows NULL).';
COMMENT ON COLUMN dwh.fact_sales_product_summary.discounted_deals IS
'Won deals with a list price above 0 and a close value: the deals the discounts average over.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.discount IS
'Sum of list price - close value over those deals.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.discount_rate IS
'Sum of (list price - close value) / list price over those deals, each term as numeric division gives it.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.priced_won_value IS
'Sum of the close values of the won deals with a list price above 0.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.priced_list_value IS
'Sum of the list prices of the won deals with a list price above 0.';
COMMENT ON COLUMN dwh.fact_sales_product_summary.run_id IS 'Lineage: the etl run that last wrote this row.';

CREATE TABLE dwh.fact_sales_account_summary (
    account_key integer PRIMARY KEY REFERENCES dwh.dim_account (account_key),
    deals integer NOT NULL,
    open_deals integer NOT NULL,
    won_deals integer NOT NULL,
    lost_deals integer NOT NULL,
    won_value numeric(30, 2) NOT NULL,
    won_days bigint NOT NULL,
    won_timed_deals integer NOT NULL,
    first_engage_key integer,
    first_engage_deals integer NOT NULL,
    last_close_key integer NOT NULL,
    last_close_deals integer NOT NULL,
    run_id bigint NOT NULL REFERENCES etl.run (run_id),
    CONSTRAINT fact_sales_account_summary_extremes_check CHECK (
        (first_engage_key IS NULL) = (first_engage_deals = 0) AND first_engage_deals >= 0
        AND last_close_deals > 0
    )
);
-- The latest close date of any live deal (v_pipeline_by_stage's as_of_date):
-- the last entry of this index.
CREATE INDEX fact_sales_account_summary_last_close_idx ON dwh.fact_sales_account_summary (last_close_key);
COMMENT ON TABLE dwh.fact_sales_account_summary IS
'One row per account with live deals: the measures of dwh.v_account_performance as sums, counts and extremes '
'with the deals on them (kept by exact deltas with the monthly aggregate; dwh.account_summary_from_facts is '
'what it must equal).';
COMMENT ON COLUMN dwh.fact_sales_account_summary.account_key IS
'The account; -1 for Unknown (deals without an account).';
COMMENT ON COLUMN dwh.fact_sales_account_summary.deals IS 'Live deals, any stage (above 0: an empty group has no row).';
COMMENT ON COLUMN dwh.fact_sales_account_summary.open_deals IS 'Live deals not closed.';
COMMENT ON COLUMN dwh.fact_sales_account_summary.won_deals IS 'Live deals won.';
COMMENT ON COLUMN dwh.fact_sales_account_summary.lost_deals IS 'Live deals lost (closed, not won).';
COMMENT ON COLUMN dwh.fact_sales_account_summary.won_value IS 'Sum of the close values of the won deals.';
COMMENT ON COLUMN dwh.fact_sales_account_summary.won_days IS
'Sum of days_to_close over the won deals that have it.';
COMMENT ON COLUMN dwh.fact_sales_account_summary.won_timed_deals IS
'Won deals with days_to_close (both dates known): won_days / won_timed_deals is their mean.';
COMMENT ON COLUMN dwh.fact_sales_account_summary.first_engage_key IS
'Earliest engage date key of the live deals (Unknown, -1, left out); NULL when none has one.';
COMMENT ON COLUMN dwh.fact_sales_account_summary.first_engage_deals IS
'Live deals engaged on first_engage_key (0 when it is NULL).';
COMMENT ON COLUMN dwh.fact_sales_account_summary.last_close_key IS
'Latest close date key of the live deals (-1 when none has one).';
COMMENT ON COLUMN dwh.fact_sales_account_summary.last_close_deals IS
'Live deals whose close date key is last_close_key.';
COMMENT ON COLUMN dwh.fact_sales_account_summary.run_id IS 'Lineage: the etl run that last wrote this row.';

CREATE TABLE dwh.fact_sales_open_pipeline (
    deal_stage_key smallint NOT NULL REFERENCES dwh.dim_deal_stage (deal_stage_key),
    engage_date_key integer NOT NULL REFERENCES dwh.dim_date (date_key),
    open_deals integer NOT NULL,
    list_value numeric NOT NULL,
    run_id bigint NOT NULL REFERENCES etl.run (run_id),
    PRIMARY KEY (deal_stage_key, engage_date_key)
);
COMMENT ON TABLE dwh.fact_sales_open_pipeline IS
'One row per deal stage and engage day with live open deals: their count and list value, from which '
'dwh.v_pipeline_by_stage takes counts, ages, mean and median (kept by exact deltas with the monthly aggregate; '
'dwh.open_pipeline_from_facts is what it must equal).';
COMMENT ON COLUMN dwh.fact_sales_open_pipeline.deal_stage_key IS 'The open deals'' stage.';
COMMENT ON COLUMN dwh.fact_sales_open_pipeline.engage_date_key IS 'Their engage date; -1 for none.';
COMMENT ON COLUMN dwh.fact_sales_open_pipeline.open_deals IS
'Live open deals of the stage engaged that day (above 0: an empty group has no row).';
COMMENT ON COLUMN dwh.fact_sales_open_pipeline.list_value IS 'Sum of their list prices (those that have one).';
COMMENT ON COLUMN dwh.fact_sales_open_pipeline.run_id IS 'Lineage: the etl run that last wrote this row.';

-- The pending deltas of each summary, as etl.touched_group holds the
-- monthly aggregate's: what the changed deals add (negative: take away),
-- until the aggregate step applies them; then kept, marked with the run,
-- for its validation. Logged: a crash between the fact and aggregate steps
-- must not lose them.
CREATE TABLE etl.touched_product (
    product_key integer PRIMARY KEY,
    deals integer NOT NULL,
    open_deals integer NOT NULL,
    won_deals integer NOT NULL,
    lost_deals integer NOT NULL,
    won_value numeric(30, 2) NOT NULL,
    won_list_value numeric NOT NULL,
    won_listed_deals integer NOT NULL,
    discounted_deals integer NOT NULL,
    discount numeric NOT NULL,
    discount_rate numeric NOT NULL,
    priced_won_value numeric(30, 2) NOT NULL,
    priced_list_value numeric NOT NULL,
    refreshed_by_run bigint
);
COMMENT ON TABLE etl.touched_product IS
'Product versions that changed deals left or entered, with what they add to each measure of '
'dwh.fact_sales_product_summary: pending (refreshed_by_run NULL) until the aggregate step applies them, then '
'kept for that run''s validation.';

CREATE TABLE etl.touched_account (
    account_key integer PRIMARY KEY,
    deals integer NOT NULL,
    open_deals integer NOT NULL,
    won_deals integer NOT NULL,
    lost_deals integer NOT NULL,
    won_value numeric(30, 2) NOT NULL,
    won_days bigint NOT NULL,
    won_timed_deals integer NOT NULL,
    refreshed_by_run bigint
);
COMMENT ON TABLE etl.touched_account IS
'Accounts that changed deals left or entered, with what they add to each summed measure of '
'dwh.fact_sales_account_summary: pending (refreshed_by_run NULL) until the aggregate step applies them, then '
'kept for that run''s validation.';

-- The first engage and last close dates: what the changes add per day.
CREATE TABLE etl.touched_account_day (
    account_key integer NOT NULL,
    date_key integer NOT NULL,
    engaged integer NOT NULL,
    close_dated integer NOT NULL,
    PRIMARY KEY (account_key, date_key)
);
COMMENT ON TABLE etl.touched_account_day IS
'Per account and day, the live deals engaged (engaged) and with that close date key (close_dated) that the '
'pending changes add (negative: take away): how an account''s first engage and last close dates move. Emptied '
'when applied.';

CREATE TABLE etl.touched_open_day (
    deal_stage_key smallint NOT NULL,
    engage_date_key integer NOT NULL,
    open_deals integer NOT NULL,
    list_value numeric NOT NULL,
    refreshed_by_run bigint,
    PRIMARY KEY (deal_stage_key, engage_date_key)
);
COMMENT ON TABLE etl.touched_open_day IS
'(stage, engage day) groups of dwh.fact_sales_open_pipeline that changed deals left or entered, with what they '
'add: pending (refreshed_by_run NULL) until the aggregate step applies them, then kept for that run''s '
'validation.';

INSERT INTO etl.config (key, value, description) VALUES
(
    'validation_recount_deals', '50000',
    'Most live deals an incremental run recounts from the facts to check the summary groups it touched: it '
    || 'samples, by a hash of their keys, validation_sample_groups of the groups with at most this / '
    || 'validation_sample_groups live deals (larger groups are covered by the summaries'' cross-checks).'
);
