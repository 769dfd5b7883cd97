-- The deals' archive (public.sales_pipeline_archive) and its routines. A
-- restore is one statement in one transaction, captured as a move (a delete
-- from the archive and an insert into sales_pipeline, the same transaction);
-- it is all or nothing. Archiving commits per batch, so it cannot run inside
-- this file's transaction: tests/test_archiving.py runs it end to end (its
-- batches, a killed batch, the warehouse), and the refusal here is of a call
-- inside a transaction block.
BEGIN;
SELECT plan(15);

SELECT has_table('public', 'sales_pipeline_archive', 'the source has an archive of closed deals');
SELECT columns_are('public', 'sales_pipeline_archive', ARRAY[
    'opportunity_id', 'sales_agent_id', 'product_id', 'account_id', 'deal_stage', 'engage_date',
    'close_date', 'close_value', 'archived_at'
], 'the archive holds a deal''s columns and when it was archived');
SELECT col_is_pk('public', 'sales_pipeline_archive', 'opportunity_id', 'one archived row per deal');
SELECT is(
    (SELECT array_agg(confrelid::regclass::text ORDER BY confrelid::regclass::text) FROM pg_constraint
      WHERE conrelid = 'public.sales_pipeline_archive'::regclass AND contype = 'f'),
    ARRAY['accounts', 'products', 'sales_agents'],
    'the archive has sales_pipeline''s foreign keys: the CRM cannot delete a member its archived deals name'
);
SELECT has_function('public', 'archive_closed_deals', ARRAY['date', 'integer', 'bigint'],
                     'public.archive_closed_deals(cut-off, batch rows, OUT archived)');
SELECT has_function('public', 'restore_archived_deals', ARRAY['text[]', 'bigint'],
                     'public.restore_archived_deals(ids, OUT restored)');

-- A deal to restore: archived by hand, with its parents.
INSERT INTO public.sales_agents (sales_agent_id, sales_agent_name) VALUES (9901, 'Archive Test Agent');
INSERT INTO public.products (product_id, product_name) VALUES (9901, 'Archive Test Product');
INSERT INTO public.sales_pipeline_archive (opportunity_id, sales_agent_id, product_id, deal_stage,
                                           engage_date, close_date, close_value)
VALUES ('ARCH0001', 9901, 9901, 'Won', '2015-01-05', '2015-02-01', 100),
       ('ARCH0002', 9901, 9901, 'Lost', '2015-01-05', '2015-02-03', 0);
SELECT coalesce(max(change_id), 0) AS m0 FROM cdc.change_log \gset

SELECT throws_ok(
    $$CALL public.restore_archived_deals('{ARCH0001,NOPE0001}')$$,
    'P0002', 'public.restore_archived_deals: 1 of the deals are not in the archive: NOPE0001',
    'a restore naming a deal the archive does not hold is refused, naming it'
);
SELECT is(
    (SELECT count(*)::int FROM public.sales_pipeline WHERE opportunity_id LIKE 'ARCH%'),
    0, '... and restores nothing'
);
SELECT results_eq(
    $$CALL public.restore_archived_deals('{ARCH0001}')$$,
    $$VALUES (1::bigint)$$,
    'a restore says how many deals it brought back'
);
SELECT results_eq(
    $$SELECT opportunity_id, deal_stage, close_value FROM public.sales_pipeline WHERE opportunity_id LIKE 'ARCH%'$$,
    $$VALUES ('ARCH0001'::text, 'Won'::text, 100::numeric)$$,
    'the restored deal is back in sales_pipeline as it was archived'
);
SELECT results_eq(
    $$SELECT opportunity_id::text FROM public.sales_pipeline_archive WHERE opportunity_id LIKE 'ARCH%'$$,
    $$VALUES ('ARCH0002'::text)$$,
    '... and gone from the archive; the other stays'
);
SELECT results_eq(
    format($$SELECT table_name, operation::text, row_key, count(DISTINCT txid)::int
               FROM cdc.change_log WHERE change_id > %s GROUP BY 1, 2, 3 ORDER BY 1$$, :m0),
    $$VALUES ('sales_pipeline'::text, 'I'::text, 'ARCH0001'::text, 1),
             ('sales_pipeline_archive', 'D', 'ARCH0001', 1)$$,
    'the restore is captured as a move: the archive''s delete and sales_pipeline''s insert'
);
SELECT throws_ok(
    $$CALL public.restore_archived_deals('{ARCH0001}')$$,
    '23505', 'public.restore_archived_deals: 1 of the deals are in sales_pipeline already: ARCH0001',
    'a deal already restored is refused, named as in sales_pipeline already'
);
SELECT throws_ok(
    $$DELETE FROM public.sales_agents WHERE sales_agent_id = 9901$$,
    '23503', NULL, 'an agent whose deals are archived cannot be deleted (as one with live deals)'
);
SELECT throws_ok(
    $$CALL public.archive_closed_deals('2016-01-01')$$,
    '2D000', NULL, 'archiving commits per batch: inside a transaction block PostgreSQL refuses its first COMMIT, made before any batch (nothing moved)'
);

SELECT * FROM finish();
ROLLBACK;
