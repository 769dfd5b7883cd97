-- Issue 13, second half: the pipeline's history.
--
-- dwh.fact_deal_history keeps every deal's stage, agent, product, account
-- and value over time: one row per committed source transaction that altered
-- one of them, valid from that transaction's own changed_at (the time rule of
-- the product versions), up to the next such row; a delete closes the row in
-- effect. The initial load seeds it from what the source knows (engage and
-- close dates, else the load's snapshot time). Written by its own step,
-- dwh.load_deal_history (unit dwh.apply_deal_history), after the fact step and
-- before the aggregate step: the window counts as applied only in the
-- aggregate step's transaction, so a run that dies before applies the same
-- window again, and the history step is written to be safe to repeat.
--
-- The source logs each deal's row image with its change (the capture
-- trigger's template, procedures/oltp), so that a transaction in the middle
-- of a window has its own state, not only the window's net one.

-- No foreign keys: every key is copied from a fact the fact step just wrote
-- (whose keys are enforced or validated) or resolved against the dimensions
-- in the same transaction; checking them again per row would cost the
-- initial load's seed (millions of rows) more than the rows themselves.
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
    -- aggregate step) meets its own rows here instead of adding copies. No
    -- surrogate key besides: building a second unique index cost the initial
    -- load's seed a second at scale 100.
    CONSTRAINT fact_deal_history_pkey PRIMARY KEY (opportunity_id, valid_from)
);

-- The as-of pipeline: the rows of open stages by start, with what the
-- pipeline sums (an index-only scan reads the rows started before the
-- instant and keeps those not ended by then). A GiST index on the period
-- would find exactly the rows in effect, but building it cost the initial
-- load's seed 6 s at scale 100 (a third of the whole load).
CREATE INDEX fact_deal_history_open_idx ON dwh.fact_deal_history (valid_from)
INCLUDE (valid_to, deal_stage_key, sales_agent_key, product_key, close_value)
WHERE NOT is_closed;
-- Stage entries by time: conversion (deals that entered a stage in a month)
-- and durations (deals that closed in a period).
CREATE INDEX fact_deal_history_entered_idx ON dwh.fact_deal_history (valid_from)
INCLUDE (opportunity_id, deal_stage_key)
WHERE entered_stage;

COMMENT ON TABLE dwh.fact_deal_history IS
'Every deal''s stage, agent, product, account and value over time: one row per committed source '
'transaction that altered them, valid from its changed_at to the next one (a delete closes the '
'row in effect); seeded by the initial load from engage and close dates.';
COMMENT ON COLUMN dwh.fact_deal_history.opportunity_id IS 'The deal (business key of dwh.fact_sales_performance).';
COMMENT ON COLUMN dwh.fact_deal_history.valid_from IS
'When the deal took these values: the changed_at of the transaction that made them (incremental); '
'the engage or close date at 00:00 UTC, else the load''s snapshot time (initial load).';
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
'Lineage: the source transaction that made the row (NULL: seeded by the initial load).';
COMMENT ON COLUMN dwh.fact_deal_history.change_id IS
'Lineage: that transaction''s last cdc.change_log row for the deal (NULL: seeded).';
COMMENT ON COLUMN dwh.fact_deal_history.run_id IS 'Lineage: the etl run that wrote the row.';

-- The new step, between the fact step and the aggregate step, in both pipelines.
UPDATE etl.pipeline_step AS s SET position = s.position + 100
 WHERE s.position > (SELECT f.position FROM etl.pipeline_step AS f
                      WHERE f.pipeline = s.pipeline AND f.step = 'dwh.load_fact_sales_performance');
INSERT INTO etl.pipeline_step (pipeline, position, step, table_name, unit)
SELECT f.pipeline, f.position + 1, 'dwh.load_deal_history', 'dwh.fact_deal_history', 'dwh.apply_deal_history'
  FROM etl.pipeline_step AS f
 WHERE f.step = 'dwh.load_fact_sales_performance';
UPDATE etl.pipeline_step AS s SET position = s.position - 99 WHERE s.position > 100;
