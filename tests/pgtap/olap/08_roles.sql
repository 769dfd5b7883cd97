-- The warehouse's roles, as the migrations leave them. b2b_owner owns every
-- object, so SECURITY DEFINER routines run as a role that is not a superuser;
-- b2b_etl may execute the pipeline's routines and do nothing else; b2b_reader
-- may read dwh and nothing else. Each forbidden action must fail with 42501.
-- (That b2b_etl can run both pipelines end to end, and that a function
-- planted in its search_path is never called, is tests/test_roles.py: the
-- entry points commit, which a pgTAP transaction cannot host.)
BEGIN;
SELECT plan(48);

-- The roles -------------------------------------------------------------------------------
SELECT has_role('b2b_owner', 'the migrations create b2b_owner');
SELECT has_role('b2b_etl', 'the migrations create b2b_etl');
SELECT has_role('b2b_reader', 'the migrations create b2b_reader');
SELECT is(
    (SELECT count(*)::int FROM pg_authid
      WHERE rolname IN ('b2b_owner', 'b2b_etl', 'b2b_reader') AND rolpassword IS NOT NULL),
    0, 'no warehouse role has a password set by the migrations'
);
SELECT is(
    (SELECT count(*)::int FROM pg_roles
      WHERE rolname IN ('b2b_owner', 'b2b_etl', 'b2b_reader')
        AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication)),
    0, 'no warehouse role is a superuser or has a superuser-like attribute'
);

-- Ownership and definer rights ------------------------------------------------------------
SELECT is(
    (SELECT array_agg(n.nspname || '.' || c.relname ORDER BY 1)
       FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
      WHERE n.nspname IN ('dwh', 'etl', 'src') AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        AND c.relowner <> 'b2b_owner'::regrole),
    NULL, 'b2b_owner owns every table, view and foreign table of dwh, etl and src'
);
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1)
       FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
      WHERE n.nspname IN ('dwh', 'etl', 'src') AND p.proowner <> 'b2b_owner'::regrole),
    NULL, 'b2b_owner owns every routine of dwh, etl and src'
);
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1)
       FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
      WHERE n.nspname IN ('dwh', 'etl') AND p.prosecdef
        AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']),
    NULL, 'every SECURITY DEFINER routine pins search_path to pg_catalog, pg_temp'
);
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1)
       FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
      WHERE n.nspname IN ('dwh', 'etl', 'src') AND p.prokind = 'f' AND NOT p.prosecdef
        AND p.provolatile <> 'i'),
    NULL, 'every function but pure immutable expressions (dwh.date_key, dwh.deal_stage_match_key) is '
          'SECURITY DEFINER (callers need no table rights)'
);
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1)
       FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
      WHERE n.nspname IN ('dwh', 'etl', 'src')
        AND has_function_privilege('public', p.oid, 'EXECUTE')),
    NULL, 'PUBLIC may execute no routine of dwh, etl or src'
);
SELECT is(
    (SELECT srvowner::regrole::text FROM pg_foreign_server WHERE srvname = 'b2b_sales_source'),
    'b2b_owner', 'b2b_owner owns the foreign server'
);
SELECT is(
    (SELECT umuser FROM pg_user_mappings WHERE srvname = 'b2b_sales_source'),
    0::oid, 'one user mapping, for PUBLIC (only b2b_owner may read the foreign tables)'
);
SELECT ok(
    (SELECT array_to_string(umoptions, ',') LIKE '%user=b2b_cdc_reader%'
       FROM pg_user_mappings WHERE srvname = 'b2b_sales_source'),
    'the foreign server logs in to the source as b2b_cdc_reader'
);

-- b2b_etl ---------------------------------------------------------------------------------
SELECT ok(has_function_privilege('b2b_etl', 'etl.run_initial_load(integer)', 'EXECUTE'),
          'b2b_etl may call etl.run_initial_load');
SELECT ok(has_function_privilege('b2b_etl', 'etl.run_incremental_update(integer)', 'EXECUTE'),
          'b2b_etl may call etl.run_incremental_update');
SELECT ok(has_function_privilege('b2b_etl', 'dwh.load_fact_sales_performance(bigint)', 'EXECUTE'),
          'b2b_etl may call a step procedure (an Airflow task)');
SELECT ok(
    EXISTS (SELECT FROM pg_db_role_setting AS s
             WHERE s.setrole = 'b2b_etl'::regrole
               AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND s.setconfig @> ARRAY['client_connection_check_interval=10s']),
    'b2b_etl''s sessions notice a dead client within 10 s (an orphaned step stops)'
);
SET ROLE b2b_etl;
SELECT throws_ok(
    $$SELECT count(*) FROM dwh.fact_sales_performance$$,
    '42501', NULL, 'b2b_etl cannot read a fact table directly'
);
SELECT throws_ok(
    $$DELETE FROM dwh.fact_sales_performance$$,
    '42501', NULL, 'b2b_etl cannot delete facts directly'
);
SELECT throws_ok(
    $$UPDATE etl.config SET value = '1' WHERE key = 'batch_size'$$,
    '42501', NULL, 'b2b_etl cannot change the pipeline''s settings'
);
SELECT throws_ok(
    $$CREATE TABLE dwh.etl_scratch (x int)$$,
    '42501', NULL, 'b2b_etl cannot create a table (no DDL)'
);
SELECT throws_ok(
    $$DROP TABLE dwh.fact_sales_performance$$,
    '42501', NULL, 'b2b_etl cannot drop a table'
);
SELECT throws_ok(
    $$TRUNCATE dwh.dim_account$$,
    '42501', NULL, 'b2b_etl cannot truncate a dimension'
);
SELECT throws_ok(
    $$CREATE OR REPLACE FUNCTION etl.config_value(p_key text) RETURNS text LANGUAGE sql AS 'SELECT ''1'''$$,
    '42501', NULL, 'b2b_etl cannot replace a pipeline routine'
);
SELECT throws_ok(
    $$SELECT count(*) FROM src.sales_pipeline$$,
    '42501', NULL, 'b2b_etl cannot read the source through the foreign tables'
);
RESET ROLE;

-- A function planted in the caller's search path -----------------------------------------
-- The definer functions pin search_path, so the caller's cannot redirect their calls.
-- (The whole pipeline, procedures included, is tests/test_roles.py.)
INSERT INTO etl.run (pipeline, batch_size, started_at)
VALUES ('incremental_update', 10, now() - INTERVAL '2 hours')
RETURNING run_id AS idle_run \gset
CREATE SCHEMA hostile;
CREATE FUNCTION hostile.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'hostile.clock_timestamp was called'; END$$;
CREATE FUNCTION hostile.format(text, text) RETURNS text LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'hostile.format was called'; END$$;
-- To everyone: a schema its user may not use is skipped in a search path, and the
-- definer functions run as b2b_owner.
GRANT USAGE ON SCHEMA hostile TO PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hostile TO PUBLIC;
SET ROLE b2b_etl;
SET LOCAL search_path = hostile, pg_catalog, public;
SELECT throws_ok(
    $$SELECT clock_timestamp()$$,
    'P0001', 'hostile.clock_timestamp was called',
    'in this search path an unqualified clock_timestamp() reaches the planted function'
);
SELECT lives_ok(
    $$SELECT etl.open_run('initial_load', NULL, false)$$,
    'etl.open_run supersedes an idle run (clock_timestamp, format inside) without reaching them'
);
RESET search_path;
RESET ROLE;
SELECT is(
    (SELECT status FROM etl.run WHERE run_id = :idle_run), 'failed',
    'and the idle run was superseded as usual'
);

-- b2b_reader ------------------------------------------------------------------------------
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text)
       FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
      WHERE n.nspname IN ('dwh', 'etl', 'src') AND has_function_privilege('b2b_reader', p.oid, 'EXECUTE')),
    ARRAY['dwh.date_key(date)', 'dwh.fact_lineage(text)', 'dwh.open_pipeline_as_of(date)',
          'dwh.stage_conversion(date)', 'dwh.stage_durations(date,date)'],
    'b2b_reader may execute exactly the read-only helpers: date_key, fact_lineage and the deal history''s as-of functions'
);
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1)
       FROM pg_proc AS p
      WHERE p.oid IN ('dwh.open_pipeline_as_of(date)'::regprocedure, 'dwh.stage_durations(date, date)'::regprocedure,
                      'dwh.stage_conversion(date)'::regprocedure, 'dwh.fold_deal_history()'::regprocedure,
                      'dwh.fold_deal_history_seed(bigint)'::regprocedure, 'etl.check_deal_history(bigint)'::regprocedure,
                      'etl.check_history_summaries(bigint, boolean)'::regprocedure)
        AND has_function_privilege('b2b_etl', p.oid, 'EXECUTE')),
    NULL,
    'b2b_etl may not execute the as-of functions (readers''), nor the history''s internal functions'
);
SET ROLE b2b_reader;
SELECT lives_ok($$SELECT count(*) FROM dwh.fact_sales_performance$$, 'b2b_reader reads the fact table');
SELECT lives_ok($$SELECT count(*) FROM dwh.dim_product$$, 'b2b_reader reads a dimension');
SELECT lives_ok($$SELECT count(*) FROM dwh.v_sales_by_month$$, 'b2b_reader reads a reporting view');
SELECT lives_ok($$SELECT count(*) FROM dwh.fact_lineage('no-such-deal')$$, 'b2b_reader looks up a fact''s lineage');
SELECT lives_ok($$SELECT count(*) FROM dwh.v_deal_history$$, 'b2b_reader reads the deal history');
SELECT lives_ok($$SELECT count(*) FROM dwh.open_pipeline_as_of('2017-06-30')$$,
                'b2b_reader reads the open pipeline as of a day');
SELECT lives_ok($$SELECT count(*) FROM dwh.stage_durations('2017-01-01', '2017-03-01')$$,
                'b2b_reader reads stage durations');
SELECT lives_ok($$SELECT count(*) FROM dwh.stage_conversion('2017-01-01')$$, 'b2b_reader reads stage conversion');
SELECT throws_ok(
    $$DELETE FROM dwh.fact_deal_history$$,
    '42501', NULL, 'b2b_reader cannot delete deal history'
);
SELECT throws_ok(
    $$UPDATE dwh.deal_pipeline_day SET deals = 0$$,
    '42501', NULL, 'b2b_reader cannot change an as-of summary'
);
SELECT throws_ok(
    $$INSERT INTO dwh.fact_sales_performance (opportunity_id) VALUES ('ROGUE')$$,
    '42501', NULL, 'b2b_reader cannot write a fact'
);
SELECT throws_ok(
    $$UPDATE dwh.dim_account SET account_name = 'x'$$,
    '42501', NULL, 'b2b_reader cannot change a dimension'
);
SELECT throws_ok(
    $$DELETE FROM dwh.fact_sales_monthly_aggregate$$,
    '42501', NULL, 'b2b_reader cannot delete aggregate rows'
);
SELECT throws_ok(
    $$SELECT count(*) FROM etl.run$$,
    '42501', NULL, 'b2b_reader cannot read the etl schema'
);
SELECT throws_ok(
    $$CALL etl.run_initial_load()$$,
    '42501', NULL, 'b2b_reader cannot run the pipeline'
);
SELECT throws_ok(
    $$SELECT dwh.clear_star_schema()$$,
    '42501', NULL, 'b2b_reader cannot call a pipeline unit (it would write as the owner)'
);
SELECT throws_ok(
    $$SELECT count(*) FROM src.accounts$$,
    '42501', NULL, 'b2b_reader cannot read the source'
);
SELECT throws_ok(
    $$CREATE VIEW dwh.reader_view AS SELECT 1 AS x$$,
    '42501', NULL, 'b2b_reader cannot create objects in dwh'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
