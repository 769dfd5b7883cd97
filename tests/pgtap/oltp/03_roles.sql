-- The source's roles, as the migrations leave them: b2b_app (the CRM
-- application) may change the four tables and nothing else, and its changes
-- are captured; b2b_cdc_reader (the warehouse's foreign server) reads the
-- tables and the change log and keeps its own position, and may not change
-- anything else. Each forbidden action must fail with 42501.
BEGIN;
SELECT plan(39);

-- The roles -------------------------------------------------------------------------------
SELECT has_role('b2b_app', 'the migrations create b2b_app');
SELECT has_role('b2b_cdc_reader', 'the migrations create b2b_cdc_reader');
SELECT is(
    (SELECT count(*)::int FROM pg_authid
      WHERE rolname IN ('b2b_app', 'b2b_cdc_reader') AND rolpassword IS NOT NULL),
    0, 'neither source role has a password set by the migrations'
);
SELECT is(
    (SELECT count(*)::int FROM pg_roles
      WHERE rolname IN ('b2b_app', 'b2b_cdc_reader')
        AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication)),
    0, 'neither source role has a superuser-like attribute'
);

-- b2b_app ---------------------------------------------------------------------------------
SELECT coalesce(max(change_id), 0) AS m0 FROM cdc.change_log \gset
SET ROLE b2b_app;
SELECT lives_ok(
    $$INSERT INTO public.accounts (account_name, sector) VALUES ('Role Test Corp', 'retail')$$,
    'b2b_app inserts an account'
);
SELECT lives_ok(
    $$UPDATE public.accounts SET sector = 'medical' WHERE account_name = 'Role Test Corp'$$,
    'b2b_app updates an account'
);
SELECT lives_ok(
    $$DELETE FROM public.accounts WHERE account_name = 'Role Test Corp'$$,
    'b2b_app deletes an account'
);
SELECT lives_ok(
    $$SELECT count(*) FROM public.sales_pipeline$$,
    'b2b_app reads the deal pipeline'
);
SELECT throws_ok(
    $$SELECT count(*) FROM cdc.change_log$$,
    '42501', NULL, 'b2b_app cannot read cdc.change_log (no access to cdc at all)'
);
SELECT throws_ok(
    $$DELETE FROM cdc.change_log$$,
    '42501', NULL, 'b2b_app cannot delete change rows'
);
SELECT throws_ok(
    $$INSERT INTO cdc.consumer (consumer_name, applied_xmin, retention)
      VALUES ('rogue', pg_current_xact_id(), '0 seconds')$$,
    '42501', NULL, 'b2b_app cannot report a reader''s position (that would purge the log)'
);
SELECT throws_ok(
    $$TRUNCATE public.sales_pipeline$$,
    '42501', NULL, 'b2b_app cannot truncate a source table'
);
SELECT throws_ok(
    $$SELECT count(*) FROM import.rejected_row$$,
    '42501', NULL, 'b2b_app cannot read the importer''s tables'
);
SELECT throws_ok(
    $$CREATE TABLE public.app_scratch (x int)$$,
    '42501', NULL, 'b2b_app cannot create tables (no DDL)'
);
SELECT throws_ok(
    $$ALTER TABLE public.accounts DISABLE TRIGGER capture_update$$,
    '42501', NULL, 'b2b_app cannot switch capture off'
);
RESET ROLE;
SELECT is(
    (SELECT array_agg(operation ORDER BY change_id) FROM cdc.change_log
      WHERE change_id > :m0 AND table_name = 'accounts'),
    ARRAY['I', 'U', 'D']::char(1)[],
    'b2b_app''s insert, update and delete were captured through the triggers'
);

-- b2b_cdc_reader --------------------------------------------------------------------------
SET ROLE b2b_cdc_reader;
SELECT lives_ok($$SELECT count(*) FROM public.accounts$$, 'b2b_cdc_reader reads accounts');
SELECT lives_ok($$SELECT count(*) FROM public.products$$, 'b2b_cdc_reader reads products');
SELECT lives_ok($$SELECT count(*) FROM public.sales_agents$$, 'b2b_cdc_reader reads sales agents');
SELECT lives_ok($$SELECT count(*) FROM public.sales_pipeline$$, 'b2b_cdc_reader reads the pipeline');
SELECT lives_ok($$SELECT count(*) FROM cdc.change_log$$, 'b2b_cdc_reader reads the change log');
SELECT lives_ok($$SELECT * FROM cdc.source_snapshot$$, 'b2b_cdc_reader reads the source snapshot');
SELECT lives_ok(
    $$INSERT INTO cdc.consumer (consumer_name, applied_xmin, retention)
      VALUES ('role_test', '1'::xid8, '1 day')$$,
    'b2b_cdc_reader records its position'
);
SELECT throws_ok(
    $$UPDATE public.sales_pipeline SET close_value = 0$$,
    '42501', NULL, 'b2b_cdc_reader cannot change a source table'
);
SELECT throws_ok(
    $$INSERT INTO public.products (product_name) VALUES ('Rogue')$$,
    '42501', NULL, 'b2b_cdc_reader cannot insert into a source table'
);
SELECT throws_ok(
    $$DELETE FROM cdc.change_log$$,
    '42501', NULL, 'b2b_cdc_reader cannot delete change rows itself'
);
SELECT throws_ok(
    $$UPDATE cdc.change_log SET row_key = '0'$$,
    '42501', NULL, 'b2b_cdc_reader cannot rewrite change rows'
);
SELECT throws_ok(
    $$DELETE FROM cdc.consumer$$,
    '42501', NULL, 'b2b_cdc_reader cannot delete readers'' positions'
);
SELECT throws_ok(
    $$CREATE TABLE cdc.reader_scratch (x int)$$,
    '42501', NULL, 'b2b_cdc_reader cannot create tables in cdc'
);
RESET ROLE;

SELECT is(
    (SELECT count(*)::int FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
      WHERE n.nspname = 'cdc' AND p.prosecdef
        AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']),
    0, 'every SECURITY DEFINER function in cdc pins search_path to pg_catalog, pg_temp'
);

-- The deals' archive and its routines: a DBA's --------------------------------------------
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc AS p
      WHERE p.pronamespace = 'public'::regnamespace
        AND (has_function_privilege('b2b_app', p.oid, 'EXECUTE')
             OR has_function_privilege('b2b_cdc_reader', p.oid, 'EXECUTE')
             OR has_function_privilege('public', p.oid, 'EXECUTE'))
        -- every routine of the project's own in public (not an extension's, as pgTAP's)
        AND NOT EXISTS (SELECT FROM pg_depend AS d
                         WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')),
    NULL, 'neither source role (nor PUBLIC) may call a routine of the source''s own in public (the archiving routines)'
);
SELECT is(
    (SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc AS p
      WHERE p.pronamespace = 'public'::regnamespace
        AND NOT EXISTS (SELECT FROM pg_depend AS d
                         WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')),
    ARRAY['archive_closed_deals', 'restore_archived_deals'],
    'the source''s own routines in public are the two archiving routines (the check above reaches any other)'
);
SELECT is(
    (SELECT count(*)::int FROM pg_proc AS p
      WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef),
    0, 'the archiving routines run with the caller''s rights (no SECURITY DEFINER in public)'
);
SET ROLE b2b_app;
SELECT throws_ok(
    $$CALL public.archive_closed_deals('2017-01-01')$$,
    '42501', NULL, 'b2b_app cannot archive deals'
);
SELECT throws_ok(
    $$CALL public.restore_archived_deals('{X}')$$,
    '42501', NULL, 'b2b_app cannot restore archived deals'
);
SELECT throws_ok(
    $$SELECT count(*) FROM public.sales_pipeline_archive$$,
    '42501', NULL, 'b2b_app cannot read the archive'
);
SELECT throws_ok(
    $$DELETE FROM public.sales_pipeline_archive$$,
    '42501', NULL, 'b2b_app cannot delete archived deals'
);
SET ROLE b2b_cdc_reader;
SELECT lives_ok($$SELECT count(*) FROM public.sales_pipeline_archive$$, 'b2b_cdc_reader reads the archive');
SELECT throws_ok(
    $$UPDATE public.sales_pipeline_archive SET close_value = 0$$,
    '42501', NULL, 'b2b_cdc_reader cannot change the archive'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
