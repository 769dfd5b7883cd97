-- The warehouse's schema contract: the star schema (tables, keys, foreign
-- keys, SCD2 guards, Unknown members, deal stages), the etl control tables,
-- the foreign tables onto the source, every pipeline routine, and the
-- comments a user reads in psql's \d+.
BEGIN;
SELECT plan(151);

-- Schemas ------------------------------------------------------------------
SELECT has_schema('dwh', 'the warehouse has a dwh schema for the star schema');
SELECT has_schema('etl', 'the warehouse has an etl schema for pipeline control');
SELECT has_schema('src', 'the warehouse has a src schema for the source''s foreign tables');

-- Star schema tables and columns --------------------------------------------
SELECT tables_are('dwh', ARRAY[
    'dim_date', 'dim_account', 'dim_product', 'dim_sales_agent', 'dim_deal_stage',
    'fact_sales_performance', 'fact_sales_performance_hot', 'fact_sales_performance_cold',
    'fact_sales_monthly_aggregate', 'fact_sales_product_summary', 'fact_sales_account_summary', 'fact_sales_open_pipeline',
    'fact_deal_history', 'deal_pipeline_day', 'deal_pipeline_month', 'deal_stage_duration', 'deal_stage_conversion'
], 'dwh holds exactly the contract''s seven tables, the three summaries of issue 13, the deal history and its as-of summaries');

SELECT columns_are('dwh', 'dim_date', ARRAY[
    'date_key', 'full_date', 'day_of_month', 'day_of_week', 'day_name', 'is_weekend', 'iso_week',
    'iso_year', 'month', 'month_name', 'month_start_key', 'quarter', 'year'
], 'dim_date has a key, the date and its day/week/month/quarter/year attributes');
SELECT columns_are('dwh', 'dim_account', ARRAY[
    'account_key', 'account_id', 'account_name', 'sector', 'year_established', 'revenue', 'employees',
    'office_location', 'parent_account_id', 'is_deleted', 'run_id', 'updated_at'
], 'dim_account has its surrogate key, business key, source attributes and lineage');
SELECT columns_are('dwh', 'dim_product', ARRAY[
    'product_key', 'product_id', 'product_name', 'series', 'sales_price', 'valid_from', 'valid_to',
    'is_current', 'is_deleted', 'run_id', 'updated_at'
], 'dim_product has its keys, attributes and SCD2 validity columns');
SELECT columns_are('dwh', 'dim_sales_agent', ARRAY[
    'sales_agent_key', 'sales_agent_id', 'sales_agent_name', 'manager_name', 'regional_office',
    'is_deleted', 'run_id', 'updated_at'
], 'dim_sales_agent has its surrogate key, business key, attributes and lineage');
SELECT columns_are('dwh', 'dim_deal_stage', ARRAY[
    'deal_stage_key', 'deal_stage_name', 'stage_order', 'is_closed', 'is_won'
], 'dim_deal_stage has the stage, its order and whether it is closed or won');
SELECT columns_are('dwh', 'fact_sales_performance', ARRAY[
    'opportunity_id', 'account_key', 'product_key', 'sales_agent_key', 'deal_stage_key',
    'engage_date_key', 'close_date_key', 'close_month_key', 'close_value', 'list_price', 'is_won', 'is_closed',
    'days_to_close', 'is_deleted', 'run_id', 'archived_at', 'is_cold'
], 'the opportunity fact has a key to each dimension, its dates and close month, value and measures, when the CRM archived it, and its part');
SELECT is(
    (SELECT a.attgenerated::text FROM pg_attribute AS a
      WHERE a.attrelid = 'dwh.fact_sales_performance'::regclass AND a.attname = 'close_month_key'),
    's',
    'close_month_key is a stored generated column (derived from close_date_key, never written by the load)'
);
SELECT columns_are('dwh', 'fact_sales_monthly_aggregate', ARRAY[
    'month_date_key', 'sales_agent_key', 'product_key', 'won_deals', 'lost_deals', 'won_value', 'run_id'
], 'the monthly aggregate has its grain (month, agent, product) and its measures');

-- Keys ----------------------------------------------------------------------
SELECT col_is_pk('dwh', 'dim_date', 'date_key', 'dim_date is keyed by date_key');
SELECT col_is_pk('dwh', 'dim_account', 'account_key', 'dim_account is keyed by its surrogate key');
SELECT col_is_pk('dwh', 'dim_product', 'product_key', 'dim_product is keyed by its surrogate key (one per version)');
SELECT col_is_pk('dwh', 'dim_sales_agent', 'sales_agent_key', 'dim_sales_agent is keyed by its surrogate key');
SELECT col_is_pk('dwh', 'dim_deal_stage', 'deal_stage_key', 'dim_deal_stage is keyed by deal_stage_key');
SELECT col_is_pk('dwh', 'fact_sales_performance_hot', 'opportunity_id',
                 'the fact holds one row per opportunity in its hot part (across parts: pgTAP 12_fact_storage)');
SELECT col_is_pk('dwh', 'fact_sales_performance_cold', 'opportunity_id',
                 'the fact holds one row per opportunity in its cold part');
SELECT col_is_pk('dwh', 'fact_sales_monthly_aggregate',
                 ARRAY['month_date_key', 'sales_agent_key', 'product_key'],
                 'the aggregate holds one row per close month, sales agent and product');

SELECT col_is_unique('dwh', 'dim_account', 'account_id', 'an account''s business key appears once (SCD1)');
SELECT col_is_unique('dwh', 'dim_sales_agent', 'sales_agent_id', 'an agent''s business key appears once (SCD1)');
SELECT col_is_unique('dwh', 'dim_deal_stage', 'deal_stage_name', 'a deal stage''s name appears once');
SELECT col_is_unique('dwh', 'dim_date', 'full_date', 'a calendar day appears once in dim_date');

SELECT col_type_is('dwh', 'dim_date', 'date_key', 'integer', 'date keys are integers (YYYYMMDD)');
SELECT col_type_is('dwh', 'fact_sales_performance', 'opportunity_id', 'text', 'opportunity ids are text, as in the source');
SELECT col_type_is('dwh', 'dim_product', 'valid_from', 'timestamp with time zone',
                   'product versions start at a point in time (timestamptz)');
SELECT col_type_is('dwh', 'dim_product', 'valid_to', 'timestamp with time zone',
                   'product versions end at a point in time (timestamptz)');

SELECT is(
    (SELECT array_agg(a.attrelid::regclass::text || '.' || a.attname ORDER BY a.attrelid::regclass::text)
       FROM pg_attribute AS a
      WHERE a.attidentity <> '' AND a.attrelid IN (
          'dwh.dim_account'::regclass, 'dwh.dim_product'::regclass, 'dwh.dim_sales_agent'::regclass)),
    ARRAY['dwh.dim_account.account_key', 'dwh.dim_product.product_key',
          'dwh.dim_sales_agent.sales_agent_key'],
    'surrogate keys of the source-fed dimensions come from identity columns'
);

-- Foreign keys: facts to dimensions, lineage to etl.run --------------------
SELECT fk_ok('dwh', 'fact_sales_performance', 'account_key', 'dwh', 'dim_account', 'account_key',
             'a fact''s account key points at dim_account');
SELECT fk_ok('dwh', 'fact_sales_performance', 'product_key', 'dwh', 'dim_product', 'product_key',
             'a fact''s product key points at a product version');
SELECT fk_ok('dwh', 'fact_sales_performance', 'sales_agent_key', 'dwh', 'dim_sales_agent', 'sales_agent_key',
             'a fact''s agent key points at dim_sales_agent');
SELECT fk_ok('dwh', 'fact_sales_performance', 'deal_stage_key', 'dwh', 'dim_deal_stage', 'deal_stage_key',
             'a fact''s stage key points at dim_deal_stage');
SELECT fk_ok('dwh', 'fact_sales_performance', 'engage_date_key', 'dwh', 'dim_date', 'date_key',
             'a fact''s engage date key points at dim_date');
SELECT fk_ok('dwh', 'fact_sales_performance', 'close_date_key', 'dwh', 'dim_date', 'date_key',
             'a fact''s close date key points at dim_date');
SELECT fk_ok('dwh', 'fact_sales_performance', 'run_id', 'etl', 'run', 'run_id',
             'a fact records the run that last wrote it');
SELECT fk_ok('dwh', 'fact_sales_monthly_aggregate', 'month_date_key', 'dwh', 'dim_date', 'date_key',
             'an aggregate row''s month points at dim_date');
SELECT fk_ok('dwh', 'fact_sales_monthly_aggregate', 'sales_agent_key', 'dwh', 'dim_sales_agent', 'sales_agent_key',
             'an aggregate row''s agent points at dim_sales_agent');
SELECT fk_ok('dwh', 'fact_sales_monthly_aggregate', 'product_key', 'dwh', 'dim_product', 'product_key',
             'an aggregate row''s product points at a product version');
SELECT fk_ok('dwh', 'fact_sales_monthly_aggregate', 'run_id', 'etl', 'run', 'run_id',
             'an aggregate row records the run that built it');
SELECT fk_ok('dwh', 'dim_account', 'run_id', 'etl', 'run', 'run_id', 'an account row records the run that last wrote it');
SELECT fk_ok('dwh', 'dim_product', 'run_id', 'etl', 'run', 'run_id', 'a product version records the run that last wrote it');
SELECT fk_ok('dwh', 'dim_sales_agent', 'run_id', 'etl', 'run', 'run_id', 'an agent row records the run that last wrote it');

-- Missing references point at Unknown, never at NULL.
SELECT col_not_null('dwh', 'fact_sales_performance', 'account_key', 'a fact always has an account key (Unknown at worst)');
SELECT col_not_null('dwh', 'fact_sales_performance', 'product_key', 'a fact always has a product key');
SELECT col_not_null('dwh', 'fact_sales_performance', 'sales_agent_key', 'a fact always has an agent key');
SELECT col_not_null('dwh', 'fact_sales_performance', 'deal_stage_key', 'a fact always has a stage key');
SELECT col_not_null('dwh', 'fact_sales_performance', 'engage_date_key', 'a fact always has an engage date key (Unknown when NULL)');
SELECT col_not_null('dwh', 'fact_sales_performance', 'close_date_key', 'a fact always has a close date key (Unknown when NULL)');
SELECT col_is_null('dwh', 'fact_sales_performance', 'close_value', 'an open deal''s close value may be NULL');
SELECT col_type_is('dwh', 'fact_sales_performance', 'close_value', 'numeric(18,2)', 'close values are stored as money (numeric(18,2))');

-- SCD2 guards on dim_product -------------------------------------------------
SELECT has_index('dwh', 'dim_product', 'dim_product_one_current_idx', 'product_id',
                 'dim_product has an index on current versions by product');
SELECT index_is_unique('dwh', 'dim_product', 'dim_product_one_current_idx',
                       'the current-version index is unique: at most one current version per product');
SELECT is(
    (SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index AS i
      WHERE i.indexrelid = to_regclass('dwh.dim_product_one_current_idx')),
    'is_current',
    'the current-version index is partial, over current rows only'
);
SELECT matches(
    (SELECT pg_get_constraintdef(c.oid) FROM pg_constraint AS c
      WHERE c.conrelid = 'dwh.dim_product'::regclass AND c.contype = 'x'),
    'EXCLUDE USING gist \(product_id WITH =, tstzrange\(valid_from, valid_to\) WITH &&\)',
    'an exclusion constraint keeps the versions of one product from overlapping in time'
);
SELECT bag_has(
    $$SELECT conname::text FROM pg_constraint WHERE conrelid = 'dwh.dim_product'::regclass AND contype = 'c'$$,
    $$VALUES ('dim_product_period_check'), ('dim_product_current_check'), ('dim_product_unknown_check')$$,
    'dim_product checks that a period is not empty, that current means open-ended, and the Unknown key'
);
SELECT col_default_is('dwh', 'dim_product', 'valid_to', 'infinity'::timestamptz,
                      'a new product version is open-ended by default');
SELECT col_default_is('dwh', 'dim_product', 'is_current', 'true', 'a new product version is current by default');
SELECT col_default_is('dwh', 'fact_sales_performance', 'is_deleted', 'false', 'a new fact is live by default');
SELECT has_index('dwh', 'dim_product', 'dim_product_lookup_idx', ARRAY['product_id', 'valid_from'],
                 'product versions are indexed for the fact''s point-in-time lookup');

-- Unknown members (-1) and the deal stages -------------------------------------
SELECT results_eq(
    $$SELECT full_date, day_name, month_start_key FROM dwh.dim_date WHERE date_key = -1$$,
    $$VALUES (NULL::date, 'Unknown'::text, -1)$$,
    'dim_date has an Unknown day (-1) with no date, for missing dates'
);
SELECT results_eq(
    $$SELECT account_id, account_name, is_deleted FROM dwh.dim_account WHERE account_key = -1$$,
    $$VALUES (NULL::integer, 'Unknown'::text, false)$$,
    'dim_account has an Unknown member (-1) with no business key'
);
SELECT results_eq(
    $$SELECT product_id, product_name, valid_from, valid_to, is_current FROM dwh.dim_product WHERE product_key = -1$$,
    $$VALUES (NULL::integer, 'Unknown'::text, '-infinity'::timestamptz, 'infinity'::timestamptz, true)$$,
    'dim_product has an Unknown member (-1), valid for all time'
);
SELECT results_eq(
    $$SELECT sales_agent_id, sales_agent_name FROM dwh.dim_sales_agent WHERE sales_agent_key = -1$$,
    $$VALUES (NULL::integer, 'Unknown'::text)$$,
    'dim_sales_agent has an Unknown member (-1) with no business key'
);
SELECT results_eq(
    $$SELECT deal_stage_name, is_closed, is_won FROM dwh.dim_deal_stage WHERE deal_stage_key = -1$$,
    $$VALUES ('Unknown'::text, false, false)$$,
    'dim_deal_stage has an Unknown member (-1), neither closed nor won'
);
SELECT results_eq(
    $$SELECT deal_stage_name, stage_order::integer, is_closed, is_won
        FROM dwh.dim_deal_stage WHERE deal_stage_key <> -1 ORDER BY deal_stage_key$$,
    $$VALUES ('Prospecting'::text, 1, false, false), ('Engaging', 2, false, false),
             ('Won', 3, true, true), ('Lost', 3, true, false)$$,
    'the four source stages in pipeline order: Prospecting, Engaging open; Won closed and won; Lost closed'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_account WHERE account_key <> -1)
  + (SELECT count(*)::integer FROM dwh.dim_product WHERE product_key <> -1)
  + (SELECT count(*)::integer FROM dwh.dim_sales_agent WHERE sales_agent_key <> -1)
  + (SELECT count(*)::integer FROM dwh.dim_date WHERE date_key <> -1)
  + (SELECT count(*)::integer FROM dwh.fact_sales_performance)
  + (SELECT count(*)::integer FROM dwh.fact_sales_monthly_aggregate),
    0,
    'a freshly migrated warehouse holds only the Unknown members and the deal stages'
);

-- Views the steps read --------------------------------------------------------
SELECT has_view('dwh', 'product_version_lookup', 'the facts resolve product versions through dwh.product_version_lookup');
SELECT has_view('dwh', 'monthly_aggregate_from_facts', 'dwh.monthly_aggregate_from_facts recomputes the aggregate from the facts');

-- etl control tables ------------------------------------------------------------
SELECT has_table('etl', 'run', 'etl.run records every pipeline run');
SELECT has_table('etl', 'loading_metadata', 'etl.loading_metadata records every step of a run');
SELECT has_table('etl', 'error_log', 'etl.error_log records errors and quarantined rows');
SELECT has_table('etl', 'config', 'etl.config holds the pipeline''s settings');
SELECT has_table('etl', 'validation_result', 'etl.validation_result records every check of a run');
SELECT has_table('etl', 'data_quality_issue', 'etl.data_quality_issue lists rows that broke a soft rule');
SELECT has_table('etl', 'stage_accounts', 'accounts are staged in etl.stage_accounts');
SELECT has_table('etl', 'stage_products', 'products are staged in etl.stage_products');
SELECT has_table('etl', 'stage_sales_agents', 'sales agents are staged in etl.stage_sales_agents');
SELECT has_table('etl', 'stage_sales_pipeline', 'opportunities are staged in etl.stage_sales_pipeline');
SELECT has_table('etl', 'change_window', 'an incremental run''s changes are pulled into etl.change_window');
SELECT has_table('etl', 'stage_deleted', 'the keys a window deleted are staged in etl.stage_deleted');
SELECT has_table('etl', 'touched_group', 'aggregate groups waiting for their refresh are kept in etl.touched_group');
SELECT has_column('etl', 'run', 'window_applied', 'etl.run records whether a run''s window is applied');

SELECT columns_are('etl', 'loading_metadata', ARRAY[
    'loading_metadata_id', 'run_id', 'step', 'table_name', 'status', 'rows_in', 'rows_inserted',
    'rows_updated', 'rows_deleted', 'rows_rejected', 'batches', 'resume_after', 'started_at',
    'finished_at', 'message', 'executor_pid'
], 'loading_metadata has status, rows in/inserted/updated/deleted/rejected, start, end and executor');
SELECT has_table('etl', 'pipeline_step', 'etl.pipeline_step lists each pipeline''s steps and units in order');
SELECT results_eq(
    $$SELECT step FROM etl.pipeline_step WHERE pipeline = 'incremental_update' ORDER BY position$$,
    ARRAY['etl.pull_change_window', 'dwh.load_dim_date', 'dwh.load_dim_account', 'dwh.load_dim_sales_agent',
          'dwh.load_dim_product', 'dwh.load_deal_history', 'dwh.load_fact_sales_performance',
          'dwh.load_fact_sales_monthly_aggregate',
          'etl.validate_run', 'etl.purge_change_log', 'etl.finish_run'],
    'the incremental pipeline''s steps in order');
SELECT is_empty(
    $$SELECT s.unit FROM etl.pipeline_step AS s WHERE to_regprocedure(s.unit || '(bigint)') IS NULL$$,
    'every unit etl.pipeline_step names is a function taking the step''s id');
SELECT columns_are('etl', 'error_log', ARRAY[
    'error_id', 'run_id', 'procedure_name', 'kind', 'sqlstate', 'message', 'detail', 'hint', 'context',
    'table_name', 'business_key', 'record', 'logged_at'
], 'error_log has the run, procedure, SQLSTATE, message and the offending record');
SELECT col_type_is('etl', 'error_log', 'record', 'jsonb', 'the offending record is kept as jsonb');
SELECT col_is_pk('etl', 'run', 'run_id', 'runs are keyed by run_id');
SELECT col_is_pk('etl', 'config', 'key', 'each setting appears once in etl.config');
SELECT col_is_unique('etl', 'loading_metadata', ARRAY['run_id', 'step', 'table_name'],
                     'a run has one metadata row per step and table (a retried step reuses it)');
SELECT fk_ok('etl', 'loading_metadata', 'run_id', 'etl', 'run', 'run_id', 'step metadata belongs to a run');
SELECT fk_ok('etl', 'validation_result', 'run_id', 'etl', 'run', 'run_id', 'a validation result belongs to a run');
SELECT fk_ok('etl', 'data_quality_issue', 'run_id', 'etl', 'run', 'run_id', 'a data-quality issue belongs to a run');
SELECT has_index('etl', 'run', 'run_one_running_idx', 'etl.run has an index on running runs');
SELECT index_is_unique('etl', 'run', 'run_one_running_idx', 'the running-run index is unique: one running run at most');
SELECT is(
    (SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index AS i
      WHERE i.indexrelid = to_regclass('etl.run_one_running_idx')),
    '(status = ''running''::text)',
    'the running-run index covers running runs only'
);

SELECT bag_has(
    $$SELECT key FROM etl.config$$,
    $$VALUES ('batch_size'), ('date_min'), ('date_max'), ('date_margin_days'), ('max_close_value')$$,
    'etl.config holds batch_size, the accepted date range, the date margin and the largest close value'
);
SELECT ok(
    (SELECT value ~ '^[1-9][0-9]*$' FROM etl.config WHERE key = 'batch_size'),
    'the default batch_size is a positive integer'
);
SELECT ok(
    (SELECT bool_and(description <> '') FROM etl.config),
    'every setting in etl.config says what it does'
);

-- Foreign tables onto the source ---------------------------------------------------
SELECT foreign_tables_are('src', ARRAY['accounts', 'products', 'sales_agents', 'sales_pipeline',
                                 'sales_pipeline_archive', 'source_snapshot',
                                 'change_log', 'cdc_consumer', 'purge_horizon'],
                          'src holds foreign tables for the four source tables, the deals'' archive, its snapshot, its change log, its readers'' positions and its purge horizon');
SELECT columns_are('src', 'change_log', ARRAY[
    'change_id', 'txid', 'table_name', 'operation', 'row_key', 'row_data', 'changed_at'
], 'src.change_log has the source change log''s columns');
SELECT col_type_is('src', 'change_log', 'txid', 'xid8', 'src.change_log reads the writing transaction as xid8 (for snapshot visibility)');
SELECT is(
    (SELECT array_agg(DISTINCT s.srvname::text) FROM pg_foreign_table AS t
       JOIN pg_foreign_server AS s ON s.oid = t.ftserver
      WHERE t.ftrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'src'::regnamespace)),
    ARRAY['b2b_sales_source'],
    'every src foreign table reads the b2b_sales_source server'
);
SELECT columns_are('src', 'sales_pipeline', ARRAY[
    'opportunity_id', 'sales_agent_id', 'product_id', 'account_id', 'deal_stage', 'engage_date',
    'close_date', 'close_value'
], 'src.sales_pipeline has the source''s opportunity columns');

-- Pipeline procedures (they commit: CALL them) ---------------------------------------
SELECT is_procedure('etl', 'run_initial_load', ARRAY['integer'], 'etl.run_initial_load(batch size) is a procedure');
SELECT is_procedure('etl', 'start_run', ARRAY['text', 'integer', 'bigint', 'boolean', 'text'], 'etl.start_run is a procedure');
SELECT is_procedure('etl', 'extract_source', ARRAY['bigint'], 'etl.extract_source(run) is a procedure');
SELECT is_procedure('dwh', 'load_dim_date', ARRAY['bigint'], 'dwh.load_dim_date(run) is a procedure');
SELECT is_procedure('dwh', 'load_dim_account', ARRAY['bigint'], 'dwh.load_dim_account(run) is a procedure');
SELECT is_procedure('dwh', 'load_dim_sales_agent', ARRAY['bigint'], 'dwh.load_dim_sales_agent(run) is a procedure');
SELECT is_procedure('dwh', 'load_dim_product', ARRAY['bigint'], 'dwh.load_dim_product(run) is a procedure');
SELECT is_procedure('dwh', 'load_fact_sales_performance', ARRAY['bigint'],
                    'dwh.load_fact_sales_performance(run) is a procedure');
SELECT is_procedure('dwh', 'load_fact_sales_monthly_aggregate', ARRAY['bigint'],
                    'dwh.load_fact_sales_monthly_aggregate(run) is a procedure');
SELECT is_procedure('etl', 'validate_run', ARRAY['bigint'], 'etl.validate_run(run) is a procedure');
SELECT is_procedure('etl', 'finish_run', ARRAY['bigint'], 'etl.finish_run(run) is a procedure');
SELECT is_procedure('etl', 'run_step', ARRAY['bigint', 'text', 'text', 'regproc'],
                    'etl.run_step(run, step, table, unit) is a procedure');
SELECT is_procedure('etl', 'end_step', ARRAY['bigint', 'text', 'text', 'text', 'text', 'text'],
                    'etl.end_step is a procedure');
SELECT is_procedure('etl', 'run_incremental_update', ARRAY['integer'],
                    'etl.run_incremental_update(batch size) is a procedure');
SELECT is_procedure('etl', 'pull_change_window', ARRAY['bigint'], 'etl.pull_change_window(run) is a procedure');
SELECT is_procedure('etl', 'purge_change_log', ARRAY['bigint'], 'etl.purge_change_log(run) is a procedure');

-- Units of work (functions: they never commit) and helpers ------------------------------
SELECT function_returns('etl', 'stage_source', ARRAY['bigint'], 'text', 'etl.stage_source(step) is a unit returning text');
SELECT function_returns('dwh', 'extend_dim_date_to_stage', ARRAY['bigint'], 'text',
                        'dwh.extend_dim_date_to_stage(step) is a unit returning text');
SELECT function_returns('dwh', 'upsert_dim_account', ARRAY['bigint'], 'text', 'dwh.upsert_dim_account(step) is a unit returning text');
SELECT function_returns('dwh', 'upsert_dim_sales_agent', ARRAY['bigint'], 'text',
                        'dwh.upsert_dim_sales_agent(step) is a unit returning text');
SELECT function_returns('dwh', 'apply_product_versions', ARRAY['bigint'], 'text',
                        'dwh.apply_product_versions(step) is a unit returning text');
SELECT function_returns('dwh', 'insert_fact_batch', ARRAY['bigint'], 'text', 'dwh.insert_fact_batch(step) is a unit returning text');
SELECT function_returns('dwh', 'rebuild_monthly_aggregate', ARRAY['bigint'], 'text',
                        'dwh.rebuild_monthly_aggregate(step) is a unit returning text');
SELECT function_returns('etl', 'stage_change_window', ARRAY['bigint'], 'text',
                        'etl.stage_change_window(step) is a unit returning text');
SELECT function_returns('etl', 'report_applied_position', ARRAY['bigint'], 'text',
                        'etl.report_applied_position(step) is a unit returning text');
SELECT function_returns('etl', 'check_run', ARRAY['bigint'], 'text', 'etl.check_run(step) is a unit returning text');
SELECT function_returns('etl', 'close_run', ARRAY['bigint'], 'text', 'etl.close_run(step) is a unit returning text');
SELECT function_returns('etl', 'validate', ARRAY['bigint'], 'setof etl.validation_result',
                        'etl.validate(run) returns its checks as etl.validation_result rows');
SELECT function_returns('etl', 'begin_step', ARRAY['bigint', 'text', 'text'], 'etl.loading_metadata',
                        'etl.begin_step(run, step, table) returns the step''s metadata row');
SELECT function_returns('etl', 'config_value', ARRAY['text'], 'text', 'etl.config_value(key) returns a setting');
SELECT function_returns('etl', 'pipeline_lock_holder', ARRAY[]::text[], 'integer',
                        'etl.pipeline_lock_holder() returns the pid holding the pipeline lock');
SELECT has_function('etl', 'add_step_counts',
                    ARRAY['bigint', 'bigint', 'bigint', 'bigint', 'bigint', 'bigint', 'text'],
                    'etl.add_step_counts records a unit''s row counts');
SELECT function_returns('dwh', 'extend_dim_date', ARRAY['date', 'date'], 'bigint',
                        'dwh.extend_dim_date(first, last) returns the days it added');
SELECT function_returns('dwh', 'date_key', ARRAY['date'], 'integer', 'dwh.date_key(date) returns a dim_date key');
SELECT volatility_is('dwh', 'date_key', ARRAY['date'], 'immutable', 'dwh.date_key is immutable (usable in indexes, inlined)');
SELECT function_returns('dwh', 'clear_star_schema', ARRAY[]::text[], 'void', 'dwh.clear_star_schema() empties the star schema');
SELECT ok(
    NOT EXISTS (
        SELECT FROM pg_proc AS p
         WHERE p.pronamespace IN ('dwh'::regnamespace, 'etl'::regnamespace)
           AND p.prokind = 'f' AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
           AND NOT EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%')),
    'every PL/pgSQL function in dwh and etl pins its search_path'
);

-- Comments: every dwh table and each of its columns says what it holds (\d+ in psql).
SELECT is(tests.uncommented('dwh.dim_date'), NULL,
          'dwh.dim_date and each of its columns carry a COMMENT (diagnostics list those that do not)');
SELECT is(tests.uncommented('dwh.dim_account'), NULL,
          'dwh.dim_account and each of its columns carry a COMMENT (diagnostics list those that do not)');
SELECT is(tests.uncommented('dwh.dim_product'), NULL,
          'dwh.dim_product and each of its columns carry a COMMENT (diagnostics list those that do not)');
SELECT is(tests.uncommented('dwh.dim_sales_agent'), NULL,
          'dwh.dim_sales_agent and each of its columns carry a COMMENT (diagnostics list those that do not)');
SELECT is(tests.uncommented('dwh.dim_deal_stage'), NULL,
          'dwh.dim_deal_stage and each of its columns carry a COMMENT (diagnostics list those that do not)');
SELECT is(tests.uncommented('dwh.fact_sales_performance'), NULL,
          'dwh.fact_sales_performance and each of its columns carry a COMMENT (diagnostics list those that do not)');
SELECT is(tests.uncommented('dwh.fact_sales_monthly_aggregate'), NULL,
          'dwh.fact_sales_monthly_aggregate and each of its columns carry a COMMENT (diagnostics list those that do not)');

-- V0023: the tables each run updates are vacuumed every 20,000 changed rows, not at 20% of them.
SELECT set_eq(
    $$SELECT c.oid::regclass::text, o.option
        FROM pg_class AS c CROSS JOIN LATERAL unnest(c.reloptions) AS o (option)
       WHERE c.oid IN ('dwh.fact_sales_performance_hot'::regclass, 'dwh.fact_deal_history'::regclass)$$,
    $$SELECT t, o FROM unnest(ARRAY['dwh.fact_sales_performance_hot', 'dwh.fact_deal_history']) AS t
       CROSS JOIN unnest(ARRAY['autovacuum_vacuum_scale_factor=0', 'autovacuum_vacuum_threshold=20000',
                               'autovacuum_vacuum_insert_scale_factor=0',
                               'autovacuum_vacuum_insert_threshold=20000',
                               'autovacuum_analyze_scale_factor=0', 'autovacuum_analyze_threshold=20000']) AS o$$,
    'the hot facts and the deal history are vacuumed and analysed every 20,000 changed rows, whatever their size'
);

SELECT * FROM finish();
ROLLBACK;
