-- Issue 15: the warehouse distributed when the database has Citus; nothing
-- changes on a single server (the extension absent, this file does nothing).
--
-- `b2bdwh migrate` creates the extension and registers the workers before
-- the first migration when B2B_CITUS_WORKERS names them (src/b2bdwh/citus.py,
-- db/citus.sh); the tables are created by the migrations before this one as
-- on one server, and distributed here, empty:
--   - by opportunity_id, co-located: the facts (both parts), their staging
--     (etl.stage_sales_pipeline, etl.fact_batch) and the deal history, so a
--     deal's rows meet on one shard and the fact step runs as one task per
--     shard;
--   - reference tables (a copy on every node): the dimensions, the monthly
--     aggregate, the summaries, the deal history's as-of summaries, and the
--     working tables the incremental steps join with the facts (the
--     dimensions' staging, the deleted keys, the touched groups, the facts'
--     contributions): Citus joins a distributed table in DML with a
--     reference table, never with a local one;
--   - local on the coordinator: the control data (etl.run, the logs, the
--     config, the change window, the pipeline's steps, the fact storage row).
--
-- What Citus cannot keep:
--   - a foreign key from a distributed or reference table to a local one:
--     the run_id keys to etl.run go (run_id stays, written by the same
--     routines);
--   - a unique index without the distribution column: the deal history's
--     key is (md5(opportunity_id), valid_from) so that every id the source
--     takes fits (V0021). On Citus it becomes a plain index; the history
--     step writes each version once under the pipeline lock and the
--     validation (etl.check_deal_history) proves it on every run.
--
-- Settings of the database, for every session (so the pipeline's, and a
-- DBA's psql):
--   - citus.multi_shard_modify_mode = sequential: a step reads the facts and
--     then writes a reference table in one transaction, which Citus refuses
--     after a parallel multi-shard statement;
--   - citus.enable_unsafe_triggers = on: the facts' trigger that keeps one
--     fact per opportunity across the parts (dwh.keep_one_fact_per_opportunity)
--     runs on each shard, whose co-located other part is on the same node.

DO $citus$
DECLARE
    v record;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    EXECUTE format('ALTER DATABASE %I SET citus.multi_shard_modify_mode TO sequential',
                   current_database());
    EXECUTE format('ALTER DATABASE %I SET citus.enable_unsafe_triggers TO on', current_database());
    -- This session too (the procedures after this file re-create the trigger).
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', false);
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', false);

    FOR v IN
        SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) AS ddl
          FROM pg_catalog.pg_constraint AS c
         WHERE c.contype = 'f'
           AND c.confrelid = 'etl.run'::regclass
           AND c.conrelid::regclass::text LIKE 'dwh.%'
           AND c.conislocal
    LOOP
        EXECUTE v.ddl;
    END LOOP;

    -- The keys between the tables distributed here go first and come back
    -- after: a reference table made while a local table references it would
    -- pull that table into Citus's metadata as a local one on the coordinator.
    CREATE TEMPORARY TABLE citus_foreign_key ON COMMIT DROP AS
    SELECT c.conrelid::regclass AS table_name, c.conname, pg_catalog.pg_get_constraintdef(c.oid) AS definition
      FROM pg_catalog.pg_constraint AS c
     WHERE c.contype = 'f' AND c.conislocal
       AND c.connamespace IN ('dwh'::regnamespace, 'etl'::regnamespace)
       AND c.confrelid <> 'etl.run'::regclass;
    FOR v IN SELECT * FROM citus_foreign_key LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', v.table_name, v.conname);
    END LOOP;

    DROP INDEX dwh.fact_deal_history_key_idx;
    CREATE INDEX fact_deal_history_key_idx ON dwh.fact_deal_history (md5(opportunity_id), valid_from);

    PERFORM create_reference_table(t)
       FROM unnest(ARRAY[
           'dwh.dim_date', 'dwh.dim_deal_stage', 'dwh.dim_account', 'dwh.dim_product',
           'dwh.dim_sales_agent',
           'dwh.fact_sales_monthly_aggregate', 'dwh.fact_sales_product_summary',
           'dwh.fact_sales_account_summary', 'dwh.fact_sales_open_pipeline',
           'dwh.deal_pipeline_day', 'dwh.deal_pipeline_month', 'dwh.deal_stage_duration',
           'dwh.deal_stage_conversion',
           'etl.stage_accounts', 'etl.stage_products', 'etl.stage_sales_agents',
           'etl.stage_deleted', 'etl.fact_contribution',
           'etl.touched_group', 'etl.touched_product', 'etl.touched_account',
           'etl.touched_account_day', 'etl.touched_open_day', 'etl.touched_duration'
       ]::regclass []) AS t;

    PERFORM create_distributed_table('dwh.fact_sales_performance', 'opportunity_id');
    PERFORM create_distributed_table(t, 'opportunity_id', colocate_with => 'dwh.fact_sales_performance')
       FROM unnest(ARRAY['etl.stage_sales_pipeline', 'etl.fact_batch', 'dwh.fact_deal_history']::regclass []) AS t;

    FOR v IN SELECT * FROM citus_foreign_key LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', v.table_name, v.conname, v.definition);
    END LOOP;
END
$citus$;
