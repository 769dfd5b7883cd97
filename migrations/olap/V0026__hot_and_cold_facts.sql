-- Issue 14: the facts in two parts, hot and cold, behind one name.
--
-- dwh.fact_sales_performance is partitioned by LIST on is_cold: the deals
-- that closed before a horizon live in dwh.fact_sales_performance_cold, all
-- others (every open deal among them) in dwh.fact_sales_performance_hot.
-- Analysts keep the one name; a query that says NOT is_cold (the open
-- pipeline, say) reads the hot part only. Measured at scale 1000 over ten
-- years with a two-year horizon (docs/partitioning.md): a window's facts
-- rewritten 40% faster, vacuum of the hot part only 2.0-4.2 s against
-- 6.1-7.6 s, recent scans twice as fast, loading as fast.
--
-- Where a fact lives follows one rule (dwh.is_cold_fact): closed, with a
-- known close date before etl.fact_storage.cold_before. Every write places
-- the fact by it; the horizon itself moves only in a run of its own
-- (pipeline horizon_move: dwh.move_facts_across_horizon), which moves the
-- facts the new horizon places elsewhere, in committed batches.
--
-- A partitioned table's primary key must hold its partition key, and
-- (opportunity_id, is_cold) would not index every key the source's does
-- (an id of the source key's largest size, 2,692 bytes, plus is_cold
-- exceeds a btree entry). So each part has its own primary key,
-- opportunity_id, as the source has; the parent has none. One fact per
-- opportunity across the parts is kept by the trigger
-- dwh.keep_one_fact_per_opportunity (a statement-level check of the rows a
-- statement wrote against the other part), and checked whole by the
-- validation of the runs that place every fact (initial load, horizon move).

-- The horizon the facts are placed by: one row.
CREATE TABLE etl.fact_storage (
    one_row boolean PRIMARY KEY DEFAULT TRUE CHECK (one_row),
    cold_before date,
    run_id bigint REFERENCES etl.run (run_id),
    set_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE etl.fact_storage IS
'Where facts are stored: the horizon the facts are placed by (one row). Set by an initial load and by a '
'horizon move (pipeline horizon_move), from etl.config cold_horizon.';
COMMENT ON COLUMN etl.fact_storage.cold_before IS
'Facts of deals closed before this day are in dwh.fact_sales_performance_cold; NULL: every fact is hot.';
COMMENT ON COLUMN etl.fact_storage.run_id IS
'The run that set the horizon (an initial load or a horizon move; while that move runs, or after it failed, '
'some facts may still be in their former part).';
COMMENT ON COLUMN etl.fact_storage.one_row IS 'Always true: the table holds one row.';
COMMENT ON COLUMN etl.fact_storage.set_at IS 'When the horizon was set.';
INSERT INTO etl.fact_storage (cold_before) VALUES (NULL);

INSERT INTO etl.config (key, value, description) VALUES
(
    'cold_horizon', '2 years',
    'Facts of deals closed before this horizon are stored cold (dwh.fact_sales_performance_cold): a positive '
    'interval (the first day of the month that long before the run''s start), a date as YYYY-MM-DD, or ''none'' '
    '(all hot). Applied by an initial load (at its start) and by a horizon move: CALL etl.run_horizon_move(); '
    '(DAG dwh_horizon_move). The horizon in force is etl.fact_storage.cold_before.'
);

-- The third pipeline: moving facts across the horizon.
ALTER TABLE etl.run DROP CONSTRAINT run_pipeline_check;
COMMENT ON TABLE etl.run IS 'One row per pipeline run (initial load, incremental update or horizon move).';
ALTER TABLE etl.run ADD CONSTRAINT run_pipeline_check
CHECK (pipeline IN ('initial_load', 'incremental_update', 'horizon_move'));
ALTER TABLE etl.pipeline_step DROP CONSTRAINT pipeline_step_pipeline_check;
ALTER TABLE etl.pipeline_step ADD CONSTRAINT pipeline_step_pipeline_check
CHECK (pipeline IN ('initial_load', 'incremental_update', 'horizon_move'));
INSERT INTO etl.pipeline_step (pipeline, position, step, table_name, unit) VALUES
('horizon_move', 1, 'dwh.move_facts_across_horizon', 'dwh.fact_sales_performance', 'dwh.move_fact_batch'),
('horizon_move', 2, 'etl.validate_run', 'etl.validation_result', 'etl.check_run'),
('horizon_move', 3, 'etl.finish_run', 'etl.run', 'etl.close_run');

-- A bulk load sets triggers aside too (the one-fact check would compare
-- every batch with every fact loaded before it).
ALTER TABLE etl.suspended_ddl DROP CONSTRAINT suspended_ddl_kind_check;
ALTER TABLE etl.suspended_ddl ADD CONSTRAINT suspended_ddl_kind_check
CHECK (kind IN ('key', 'foreign key', 'index', 'trigger'));

-- The fact step marks the batch's deals that have a fact (in either part),
-- so that it inserts only the others; and it keeps what it writes of the
-- dates (computed once, for the rewrite and the insert: the rule of where a
-- fact goes reads the close date's key).
ALTER TABLE etl.fact_batch
ADD COLUMN has_fact boolean NOT NULL DEFAULT FALSE,
ADD COLUMN engage_date_key integer,
ADD COLUMN close_date_key integer,
ADD COLUMN days_to_close integer;

-- The views over the facts go, and come back from their repeatable files,
-- which this change edits (a view follows its table's OID, not its name).
-- In a new database they come after the versioned files: none yet.
DROP VIEW IF EXISTS dwh.v_deal_history;
DROP VIEW IF EXISTS dwh.account_summary_from_facts;
DROP VIEW IF EXISTS dwh.deal_history_seed;
DROP VIEW IF EXISTS dwh.monthly_aggregate_from_facts;
DROP VIEW IF EXISTS dwh.open_pipeline_from_facts;
DROP VIEW IF EXISTS dwh.product_summary_from_facts;
DROP VIEW IF EXISTS dwh.stage_duration_from_facts;

ALTER TABLE dwh.fact_sales_performance RENAME TO fact_sales_performance_unpartitioned;

CREATE TABLE dwh.fact_sales_performance (
    opportunity_id text NOT NULL,
    account_key integer NOT NULL,
    product_key integer NOT NULL,
    sales_agent_key integer NOT NULL,
    deal_stage_key smallint NOT NULL,
    engage_date_key integer NOT NULL,
    close_date_key integer NOT NULL,
    close_month_key integer NOT NULL GENERATED ALWAYS AS (
        CASE WHEN close_date_key = -1 THEN -1 ELSE close_date_key / 100 * 100 + 1 END
    ) STORED,
    close_value numeric(18, 2),
    list_price numeric,
    is_won boolean NOT NULL,
    is_closed boolean NOT NULL,
    days_to_close integer,
    is_deleted boolean NOT NULL DEFAULT FALSE,
    run_id bigint NOT NULL,
    archived_at timestamptz,
    is_cold boolean NOT NULL DEFAULT FALSE
) PARTITION BY LIST (is_cold);

-- The hot part is vacuumed after a fixed number of changed rows (V0023's
-- reasons); the cold part changes rarely: autovacuum's defaults.
CREATE TABLE dwh.fact_sales_performance_hot PARTITION OF dwh.fact_sales_performance
FOR VALUES IN (FALSE) WITH (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000
);
CREATE TABLE dwh.fact_sales_performance_cold PARTITION OF dwh.fact_sales_performance
FOR VALUES IN (TRUE);

-- Every fact is hot until a horizon move places it (etl.fact_storage: NULL).
INSERT INTO dwh.fact_sales_performance (
    opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key, engage_date_key,
    close_date_key, close_value, list_price, is_won, is_closed, days_to_close, is_deleted, run_id,
    archived_at
)
SELECT
    u.opportunity_id,
    u.account_key,
    u.product_key,
    u.sales_agent_key,
    u.deal_stage_key,
    u.engage_date_key,
    u.close_date_key,
    u.close_value,
    u.list_price,
    u.is_won,
    u.is_closed,
    u.days_to_close,
    u.is_deleted,
    u.run_id,
    u.archived_at
FROM dwh.fact_sales_performance_unpartitioned AS u;

-- The columns and indexes keep their descriptions (the indexes are made
-- again below, under their names).
CREATE TEMPORARY TABLE fact_description ON COMMIT DROP AS
SELECT
    format('COLUMN dwh.fact_sales_performance.%I', a.attname) AS object_name,
    d.description
FROM pg_catalog.pg_attribute AS a
INNER JOIN pg_catalog.pg_description AS d
    ON a.attrelid = d.objoid AND a.attnum = d.objsubid AND d.classoid = 'pg_catalog.pg_class'::regclass
WHERE a.attrelid = 'dwh.fact_sales_performance_unpartitioned'::regclass
UNION ALL
SELECT
    format('INDEX dwh.%I', c.relname) AS object_name,
    d.description
FROM pg_catalog.pg_index AS i
INNER JOIN pg_catalog.pg_class AS c ON i.indexrelid = c.oid
INNER JOIN pg_catalog.pg_description AS d
    ON i.indexrelid = d.objoid AND d.objsubid = 0 AND d.classoid = 'pg_catalog.pg_class'::regclass
WHERE i.indrelid = 'dwh.fact_sales_performance_unpartitioned'::regclass;

DROP TABLE dwh.fact_sales_performance_unpartitioned;

ALTER TABLE dwh.fact_sales_performance_hot
ADD CONSTRAINT fact_sales_performance_hot_pkey PRIMARY KEY (opportunity_id);
ALTER TABLE dwh.fact_sales_performance_cold
ADD CONSTRAINT fact_sales_performance_cold_pkey PRIMARY KEY (opportunity_id);
ALTER TABLE dwh.fact_sales_performance
ADD CONSTRAINT fact_sales_performance_account_key_fkey
FOREIGN KEY (account_key) REFERENCES dwh.dim_account (account_key),
ADD CONSTRAINT fact_sales_performance_product_key_fkey
FOREIGN KEY (product_key) REFERENCES dwh.dim_product (product_key),
ADD CONSTRAINT fact_sales_performance_sales_agent_key_fkey
FOREIGN KEY (sales_agent_key) REFERENCES dwh.dim_sales_agent (sales_agent_key),
ADD CONSTRAINT fact_sales_performance_deal_stage_key_fkey
FOREIGN KEY (deal_stage_key) REFERENCES dwh.dim_deal_stage (deal_stage_key),
ADD CONSTRAINT fact_sales_performance_engage_date_key_fkey
FOREIGN KEY (engage_date_key) REFERENCES dwh.dim_date (date_key),
ADD CONSTRAINT fact_sales_performance_close_date_key_fkey
FOREIGN KEY (close_date_key) REFERENCES dwh.dim_date (date_key),
ADD CONSTRAINT fact_sales_performance_run_id_fkey FOREIGN KEY (run_id) REFERENCES etl.run (run_id);

CREATE INDEX fact_sales_performance_account_idx ON dwh.fact_sales_performance (account_key);
CREATE INDEX fact_sales_performance_close_date_idx ON dwh.fact_sales_performance (close_date_key);
CREATE INDEX fact_sales_performance_group_idx
ON dwh.fact_sales_performance (sales_agent_key, product_key, close_month_key)
INCLUDE (is_closed, is_deleted, is_won, close_value);
CREATE INDEX fact_sales_performance_open_idx ON dwh.fact_sales_performance (deal_stage_key, engage_date_key)
INCLUDE (list_price) WHERE NOT is_closed AND NOT is_deleted;
CREATE INDEX fact_sales_performance_close_before_engage_idx
ON dwh.fact_sales_performance (engage_date_key)
WHERE (is_closed OR is_deleted) AND close_date_key < engage_date_key;

DO $descriptions$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT d.object_name, d.description FROM fact_description AS d LOOP
        EXECUTE format('COMMENT ON %s IS %L', v.object_name, v.description);
    END LOOP;
END
$descriptions$;

COMMENT ON TABLE dwh.fact_sales_performance IS
'One row per opportunity (deal), at its current stage; stored in two parts, hot and cold '
'(dwh.fact_sales_performance_hot and _cold, by is_cold).';
COMMENT ON COLUMN dwh.fact_sales_performance.is_cold IS
'Stored in the cold part: the deal closed before the horizon (etl.fact_storage.cold_before). '
'NOT is_cold reads the hot part only.';
COMMENT ON TABLE dwh.fact_sales_performance_hot IS
'The hot part of dwh.fact_sales_performance: open deals and deals closed since the horizon.';
COMMENT ON TABLE dwh.fact_sales_performance_cold IS
'The cold part of dwh.fact_sales_performance: deals closed before the horizon (etl.fact_storage).';

ANALYZE dwh.fact_sales_performance;
