-- The incremental update: the source's change log read through
-- postgres_fdw, the window of changes one run applies, and what stays
-- between runs (groups of the aggregate to refresh, applied windows).

CREATE FOREIGN TABLE src.change_log (
    change_id bigint,
    txid xid8,
    table_name text,
    operation char(1),
    row_key text,
    row_data jsonb,
    changed_at timestamptz
) SERVER b2b_sales_source OPTIONS (schema_name 'cdc', table_name 'change_log');
COMMENT ON FOREIGN TABLE src.change_log IS 'The source''s captured changes (cdc.change_log), read by window.';

CREATE FOREIGN TABLE src.cdc_consumer (
    consumer_name text,
    applied_xmin xid8,
    retention interval,
    reported_at timestamptz
) SERVER b2b_sales_source OPTIONS (schema_name 'cdc', table_name 'consumer');
COMMENT ON FOREIGN TABLE src.cdc_consumer IS
'Where this warehouse reports the changes it applied, so the source can purge them.';

-- The changes of one window, exactly as captured.
CREATE UNLOGGED TABLE etl.change_window (LIKE src.change_log);
CREATE INDEX change_window_key_idx ON etl.change_window (table_name, row_key, change_id);
COMMENT ON TABLE etl.change_window IS
'The changes the current incremental run pulled: committed after the last applied snapshot and '
'visible in this run''s snapshot.';

-- Keys whose last change in the window is a delete.
CREATE UNLOGGED TABLE etl.stage_deleted (
    table_name text NOT NULL,
    row_key text NOT NULL,
    deleted_at timestamptz NOT NULL,
    PRIMARY KEY (table_name, row_key)
);
COMMENT ON TABLE etl.stage_deleted IS 'Source rows deleted by the current window (their last change is D).';

-- What changed deals add to or take from each group of the monthly
-- aggregate, until the aggregate step applies it. Logged: a crash between
-- the fact and aggregate steps must not lose it.
CREATE TABLE etl.touched_group (
    month_date_key integer NOT NULL,
    sales_agent_key integer NOT NULL,
    product_key integer NOT NULL,
    won_deals_delta integer NOT NULL DEFAULT 0,
    lost_deals_delta integer NOT NULL DEFAULT 0,
    won_value_delta numeric(18, 2) NOT NULL DEFAULT 0,
    refreshed_by_run bigint,
    PRIMARY KEY (month_date_key, sales_agent_key, product_key)
);
COMMENT ON TABLE etl.touched_group IS
'(month, agent, product version) groups of the monthly aggregate that changed deals left or entered, '
'with what they add or take away: pending (refreshed_by_run NULL) until the aggregate step applies '
'them, then kept for that run''s validation.';
COMMENT ON COLUMN etl.touched_group.won_deals_delta IS 'Won deals the changes add (negative: take away).';
COMMENT ON COLUMN etl.touched_group.lost_deals_delta IS 'Lost deals the changes add (negative: take away).';
COMMENT ON COLUMN etl.touched_group.won_value_delta IS 'Won value the changes add (negative: take away).';
COMMENT ON COLUMN etl.touched_group.refreshed_by_run IS
'The run whose aggregate step applied the group; NULL while it waits.';

ALTER TABLE etl.run ADD COLUMN window_applied boolean NOT NULL DEFAULT FALSE;
ALTER TABLE etl.run ADD COLUMN changes_in_window bigint;
ALTER TABLE etl.run ADD COLUMN driver_pid integer;
ALTER TABLE etl.run ADD COLUMN driver_started_at timestamptz;
COMMENT ON COLUMN etl.run.driver_pid IS
'The backend running the whole run in one call (etl.run_initial_load, etl.run_incremental_update); NULL '
'when its steps are called one by one (Airflow).';
COMMENT ON COLUMN etl.run.driver_started_at IS 'When that backend started: with its pid, who it is.';
COMMENT ON COLUMN etl.run.window_applied IS
'The run''s snapshot is applied to the star schema (set in the transaction that applies it): the next '
'incremental window starts after it.';
COMMENT ON COLUMN etl.run.changes_in_window IS 'Changes the incremental run pulled from the source.';

INSERT INTO etl.config (key, value, description) VALUES
('change_retention', '7 days', 'How long the source keeps changes after the warehouse applied them.'),
('consumer_name', 'b2b_sales_olap', 'The name this warehouse reports its position under in cdc.consumer.'),
(
    'validation_sample_groups', '50',
    'Aggregate groups an incremental run recomputes from their deals to check them (a bounded spot check).'
),
(
    'run_idle_timeout', '30 minutes',
    'A running run idle between steps for longer than this counts as abandoned: a new run replaces it.'
);

-- One batch of opportunities on its way into the fact table, with its keys
-- resolved and its data-quality verdict: written once, read by each of the
-- statements that quarantine, list issues, retire old facts and insert.
CREATE UNLOGGED TABLE etl.fact_batch (
    LIKE etl.stage_sales_pipeline,
    hard_reason text,
    soft_rules text[] NOT NULL,
    account_key integer NOT NULL,
    product_key integer NOT NULL,
    sales_agent_key integer NOT NULL,
    deal_stage_key smallint,
    list_price numeric,
    is_won boolean,
    is_closed boolean
);
COMMENT ON TABLE etl.fact_batch IS
'The batch of opportunities the fact step is working on (emptied at each batch).';

-- What one fact batch takes from (-1) and adds to (+1) the aggregate: the
-- old facts it replaces or retires and the new ones it inserts. Folded into
-- etl.touched_group at the end of the batch, in the batch's transaction.
CREATE UNLOGGED TABLE etl.fact_contribution (
    sign smallint NOT NULL,
    month_date_key integer NOT NULL,
    sales_agent_key integer NOT NULL,
    product_key integer NOT NULL,
    is_closed boolean NOT NULL,
    is_won boolean NOT NULL,
    close_value numeric(18, 2)
);
COMMENT ON TABLE etl.fact_contribution IS
'The current fact batch''s old (-1) and new (+1) facts, as the aggregate sees them (emptied at each batch).';
