-- Issue 13, second half: the pipeline's history.
--
-- dwh.fact_deal_history keeps every deal's stage, agent, product, account
-- and value over time: one row per committed source transaction that altered
-- one of them, valid from that transaction's own changed_at (the time rule of
-- the product versions), up to the next such row; a delete closes the row in
-- effect. Written by its own step, dwh.load_deal_history (unit
-- dwh.apply_deal_history), after the dimension steps and before the fact
-- step; the aggregate step marks the window applied, so a run that dies
-- before that applies the same window again, and the history step is
-- written to be safe to repeat.
--
-- The initial load's seed (what the source knows of each deal's past: its
-- engage and close dates) is not copied into the table: measured at scale
-- 100, writing its 1.5 million rows and their key cost 9.4 s of a 29 s load.
-- It is the view dwh.deal_history_seed over the facts, for the deals no
-- window has touched yet (their facts are still as the initial load wrote
-- them); the history step copies a deal's seed rows into the table the first
-- time a window touches it, before the fact step rewrites its fact. What
-- users query is dwh.v_deal_history: the table and the seed together.
--
-- The as-of questions read summaries kept by exact deltas in the same step
-- (each touched deal's contribution before the window out, after it in; the
-- initial load adds the seed's): the open pipeline as day and month deltas,
-- stage durations as a histogram, stage entries and conversions per month.
--
-- The source logs each deal's row image with its change (the capture
-- trigger's template, procedures/oltp), so that a transaction in the middle
-- of a window has its own state, not only the window's net one.

-- No foreign keys: every key is resolved against the dimensions in the
-- same transaction (or copied from a fact the initial load wrote and
-- validated), as the fact step resolves them.
CREATE TABLE dwh.fact_deal_history (
    opportunity_id text NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to timestamptz NOT NULL DEFAULT 'infinity',
    deal_stage_key smallint NOT NULL,
    sales_agent_key integer NOT NULL,
    product_key integer NOT NULL,
    account_key integer NOT NULL,
    close_value numeric(18, 2),
    engage_date_key integer NOT NULL,
    close_date_key integer NOT NULL,
    is_closed boolean NOT NULL,
    is_won boolean NOT NULL,
    entered_stage boolean NOT NULL,
    txid xid8,
    change_id bigint,
    run_id bigint NOT NULL,
    CONSTRAINT fact_deal_history_period_check CHECK (valid_from < valid_to),
    -- Exactly once: a window applied again (a run that died before its
    -- aggregate step) meets its own rows here instead of adding copies.
    CONSTRAINT fact_deal_history_pkey PRIMARY KEY (opportunity_id, valid_from)
);

COMMENT ON TABLE dwh.fact_deal_history IS
'Every deal''s stage, agent, product, account and value over time, for the deals a window touched: '
'one row per committed source transaction that altered them, valid from its changed_at to the next one '
'(a delete closes the row in effect), after the deal''s seed rows; query dwh.v_deal_history, which adds '
'the seed of the deals no window touched.';
COMMENT ON COLUMN dwh.fact_deal_history.opportunity_id IS 'The deal (business key of dwh.fact_sales_performance).';
COMMENT ON COLUMN dwh.fact_deal_history.valid_from IS
'When the deal took these values: the changed_at of the transaction that made them (incremental); '
'the engage or close date at 00:00 UTC, else the load''s snapshot time (seed rows).';
COMMENT ON COLUMN dwh.fact_deal_history.valid_to IS
'When the next row starts or a delete ended the deal; infinity while current.';
COMMENT ON COLUMN dwh.fact_deal_history.deal_stage_key IS 'The stage, resolved as the fact step resolves it.';
COMMENT ON COLUMN dwh.fact_deal_history.sales_agent_key IS 'The owner (agent), resolved as the fact step does.';
COMMENT ON COLUMN dwh.fact_deal_history.product_key IS
'The product version, resolved as the fact step does (the version in effect at the engage date).';
COMMENT ON COLUMN dwh.fact_deal_history.account_key IS 'The account, -1 when none or unresolved.';
COMMENT ON COLUMN dwh.fact_deal_history.close_value IS 'The deal''s value (NULL while open, as in the CRM).';
COMMENT ON COLUMN dwh.fact_deal_history.engage_date_key IS
'The engage date the deal had when the row was written (not tracked: a change of it alone makes no row).';
COMMENT ON COLUMN dwh.fact_deal_history.close_date_key IS
'The close date the deal had when the row was written (not tracked, as engage_date_key).';
COMMENT ON COLUMN dwh.fact_deal_history.is_closed IS 'The stage is closed (Won or Lost): from dim_deal_stage.';
COMMENT ON COLUMN dwh.fact_deal_history.is_won IS 'The stage is Won: from dim_deal_stage.';
COMMENT ON COLUMN dwh.fact_deal_history.entered_stage IS
'The row starts a stay in its stage: the deal''s previous row (if any, without a delete between) '
'was in another stage.';
COMMENT ON COLUMN dwh.fact_deal_history.txid IS
'Lineage: the source transaction that made the row (NULL: a seed row).';
COMMENT ON COLUMN dwh.fact_deal_history.change_id IS
'Lineage: that transaction''s last cdc.change_log row for the deal (NULL: seeded).';
COMMENT ON COLUMN dwh.fact_deal_history.run_id IS 'Lineage: the etl run that wrote the row.';

-- The open pipeline at the end of a day: the deals of each open stage,
-- agent and product whose row starts on or before that day minus those
-- whose row ends on or before it, as changes per day; a month's changes
-- summed, so a day's state is its months before plus its month's days.
CREATE TABLE dwh.deal_pipeline_day (
    day date NOT NULL,
    deal_stage_key smallint NOT NULL,
    sales_agent_key integer NOT NULL,
    product_id integer NOT NULL,
    deals bigint NOT NULL,
    open_value numeric NOT NULL,
    CONSTRAINT deal_pipeline_day_pkey PRIMARY KEY (day, deal_stage_key, sales_agent_key, product_id)
);
CREATE TABLE dwh.deal_pipeline_month (
    month date NOT NULL,
    deal_stage_key smallint NOT NULL,
    sales_agent_key integer NOT NULL,
    product_id integer NOT NULL,
    deals bigint NOT NULL,
    open_value numeric NOT NULL,
    CONSTRAINT deal_pipeline_month_pkey PRIMARY KEY (month, deal_stage_key, sales_agent_key, product_id)
);
COMMENT ON TABLE dwh.deal_pipeline_day IS
'Summary of dwh.v_deal_history for dwh.open_pipeline_as_of: per UTC day and open stage, agent and product, '
'the deals (and value) whose row in that stage starts that day minus those whose row ends that day.';
COMMENT ON COLUMN dwh.deal_pipeline_day.day IS 'The UTC day of the changes.';
COMMENT ON COLUMN dwh.deal_pipeline_day.deal_stage_key IS 'An open stage (dim_deal_stage, not closed).';
COMMENT ON COLUMN dwh.deal_pipeline_day.sales_agent_key IS 'The deals'' agent (dim_sales_agent).';
COMMENT ON COLUMN dwh.deal_pipeline_day.product_id IS
'The deals'' product (business key: a version move is no change), -1 for the Unknown product.';
COMMENT ON COLUMN dwh.deal_pipeline_day.deals IS 'Deals entering minus deals leaving that day.';
COMMENT ON COLUMN dwh.deal_pipeline_day.open_value IS
'Their value at list price (each deal''s product version''s sales price) entering minus leaving.';
COMMENT ON TABLE dwh.deal_pipeline_month IS
'dwh.deal_pipeline_day summed per month (first day of the month), kept in the same statements.';
COMMENT ON COLUMN dwh.deal_pipeline_month.month IS 'First day of the UTC month.';
COMMENT ON COLUMN dwh.deal_pipeline_month.deal_stage_key IS 'As in dwh.deal_pipeline_day.';
COMMENT ON COLUMN dwh.deal_pipeline_month.sales_agent_key IS 'As in dwh.deal_pipeline_day.';
COMMENT ON COLUMN dwh.deal_pipeline_month.product_id IS 'As in dwh.deal_pipeline_day.';
COMMENT ON COLUMN dwh.deal_pipeline_month.deals IS 'The month''s day changes summed.';
COMMENT ON COLUMN dwh.deal_pipeline_month.open_value IS 'The month''s value changes summed.';

-- Stage durations: the deals that entered a closed stage, per month of
-- their close date, agent, product and days from engage date to close date
-- (a histogram: percentiles are exact from it).
CREATE TABLE dwh.deal_stage_duration (
    close_month date NOT NULL,
    sales_agent_key integer NOT NULL,
    product_id integer NOT NULL,
    days integer NOT NULL,
    deals integer NOT NULL,
    CONSTRAINT deal_stage_duration_pkey PRIMARY KEY (close_month, sales_agent_key, product_id, days)
);
COMMENT ON TABLE dwh.deal_stage_duration IS
'Summary of dwh.v_deal_history for dwh.stage_durations: closings (a row entering Won or Lost, with an '
'engage and a close date) per close month, agent, product and days from engage date to close date.';
COMMENT ON COLUMN dwh.deal_stage_duration.close_month IS 'First day of the month of the close date.';
COMMENT ON COLUMN dwh.deal_stage_duration.sales_agent_key IS 'The agent the deal closed with.';
COMMENT ON COLUMN dwh.deal_stage_duration.product_id IS 'The product it closed with (business key, -1 Unknown).';
COMMENT ON COLUMN dwh.deal_stage_duration.days IS 'Close date minus engage date.';
COMMENT ON COLUMN dwh.deal_stage_duration.deals IS 'How many closings took that many days.';

-- Conversion: the deals that entered a stage in a month (to_stage_key =
-- from_stage_key), and how many of them entered each other stage later.
CREATE TABLE dwh.deal_stage_conversion (
    entry_month date NOT NULL,
    from_stage_key smallint NOT NULL,
    to_stage_key smallint NOT NULL,
    deals bigint NOT NULL,
    CONSTRAINT deal_stage_conversion_pkey PRIMARY KEY (entry_month, from_stage_key, to_stage_key)
);
COMMENT ON TABLE dwh.deal_stage_conversion IS
'Summary of dwh.v_deal_history for dwh.stage_conversion: per UTC month, the deals that entered a stage '
'(to_stage_key = from_stage_key) and, of those entries, how many entered another stage later.';
COMMENT ON COLUMN dwh.deal_stage_conversion.entry_month IS 'First day of the UTC month of the entry.';
COMMENT ON COLUMN dwh.deal_stage_conversion.from_stage_key IS 'The stage entered that month.';
COMMENT ON COLUMN dwh.deal_stage_conversion.to_stage_key IS
'A stage entered later by the same deal; equal to from_stage_key: the entries themselves.';
COMMENT ON COLUMN dwh.deal_stage_conversion.deals IS 'Entries (or entries followed by to_stage_key).';

-- The new step. Incremental update: after the dimension steps, before the
-- fact step (a deal's first touch copies its seed, made from the fact the
-- initial load wrote, before the fact step rewrites it). Initial load: after
-- the fact step (the seed is made from the facts).
UPDATE etl.pipeline_step AS s SET position = s.position + 100
WHERE s.position >= (
        SELECT f.position + CASE WHEN f.pipeline = 'initial_load' THEN 1 ELSE 0 END
        FROM etl.pipeline_step AS f
        WHERE f.pipeline = s.pipeline AND f.step = 'dwh.load_fact_sales_performance'
    );
INSERT INTO etl.pipeline_step (pipeline, position, step, table_name, unit)
SELECT
    f.pipeline,
    CASE WHEN f.pipeline = 'initial_load' THEN f.position + 1 ELSE f.position - 100 END AS position,
    'dwh.load_deal_history' AS step,
    'dwh.fact_deal_history' AS table_name,
    'dwh.apply_deal_history' AS unit
FROM etl.pipeline_step AS f
WHERE f.step = 'dwh.load_fact_sales_performance';
UPDATE etl.pipeline_step AS s SET position = s.position - 99
WHERE s.position > 100;
