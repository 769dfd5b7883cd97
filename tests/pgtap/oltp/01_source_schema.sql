-- The CRM source schema of the contract: tables, keys and the constraints
-- a real CRM has (and no more: bad values must be storable).
BEGIN;
SELECT plan(33);

SELECT has_table('public', 'accounts', 'the source has accounts');
SELECT has_table('public', 'products', 'the source has products');
SELECT has_table('public', 'sales_agents', 'the source has sales agents');
SELECT has_table('public', 'sales_pipeline', 'the source has the deal pipeline');

SELECT columns_are('public', 'accounts', ARRAY[
    'account_id', 'account_name', 'sector', 'year_established', 'revenue',
    'employees', 'office_location', 'parent_account_id'
], 'accounts has the contract''s columns');
SELECT columns_are('public', 'products', ARRAY[
    'product_id', 'product_name', 'series', 'sales_price'
], 'products has the contract''s columns');
SELECT columns_are('public', 'sales_agents', ARRAY[
    'sales_agent_id', 'sales_agent_name', 'manager_name', 'regional_office'
], 'sales_agents has the contract''s columns');
SELECT columns_are('public', 'sales_pipeline', ARRAY[
    'opportunity_id', 'sales_agent_id', 'product_id', 'account_id', 'deal_stage',
    'engage_date', 'close_date', 'close_value'
], 'sales_pipeline has the contract''s columns');

SELECT col_is_pk('public', 'accounts', 'account_id', 'accounts are keyed by account_id');
SELECT col_is_pk('public', 'products', 'product_id', 'products are keyed by product_id');
SELECT col_is_pk('public', 'sales_agents', 'sales_agent_id', 'agents are keyed by sales_agent_id');
SELECT col_is_pk('public', 'sales_pipeline', 'opportunity_id', 'deals are keyed by opportunity_id');
SELECT col_type_is('public', 'sales_pipeline', 'opportunity_id', 'text', 'opportunity ids are text');
SELECT col_type_is('public', 'accounts', 'account_id', 'integer', 'account ids are integers');

SELECT is(
    (SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute
      WHERE attidentity <> '' AND attrelid IN (
          'public.accounts'::regclass, 'public.products'::regclass, 'public.sales_agents'::regclass)),
    ARRAY['account_id', 'product_id', 'sales_agent_id'],
    'integer keys come from identity columns'
);

SELECT col_is_unique('public', 'accounts', 'account_name', 'account names are unique');
SELECT col_is_unique('public', 'products', 'product_name', 'product names are unique');
SELECT col_is_unique('public', 'sales_agents', 'sales_agent_name', 'agent names are unique');
SELECT col_not_null('public', 'accounts', 'account_name', 'an account has a name');
SELECT col_not_null('public', 'sales_pipeline', 'sales_agent_id', 'a deal has an agent');
SELECT col_not_null('public', 'sales_pipeline', 'product_id', 'a deal has a product');
SELECT col_not_null('public', 'sales_pipeline', 'deal_stage', 'a deal has a stage');
SELECT col_is_null('public', 'sales_pipeline', 'account_id', 'a deal may have no account');
SELECT col_is_null('public', 'sales_pipeline', 'close_value', 'an open deal has no close value');

SELECT fk_ok('public', 'sales_pipeline', 'sales_agent_id', 'public', 'sales_agents', 'sales_agent_id',
             'a deal''s agent exists');
SELECT fk_ok('public', 'sales_pipeline', 'product_id', 'public', 'products', 'product_id',
             'a deal''s product exists');
SELECT fk_ok('public', 'sales_pipeline', 'account_id', 'public', 'accounts', 'account_id',
             'a deal''s account exists');
SELECT fk_ok('public', 'accounts', 'parent_account_id', 'public', 'accounts', 'account_id',
             'an account''s parent is an account');

SELECT has_index('public', 'sales_pipeline', 'sales_pipeline_account_id_idx', 'account_id',
                 'deals are indexed by account for foreign key checks');

-- Behaviour: values the warehouse must cope with can be stored.
INSERT INTO public.products (product_name, series, sales_price) VALUES ('Test Widget', NULL, -5);
INSERT INTO public.sales_agents (sales_agent_name) VALUES ('Test Agent');
SELECT lives_ok(
    $$INSERT INTO public.sales_pipeline
          (opportunity_id, sales_agent_id, product_id, deal_stage, close_date, engage_date, close_value)
      SELECT 'ODD00001', a.sales_agent_id, p.product_id, 'Negotiating', '2001-01-01', '2030-01-01', -1
        FROM public.sales_agents a, public.products p$$,
    'an unknown stage, reversed dates and a negative value are storable'
);
SELECT throws_ok(
    $$INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id, deal_stage)
      VALUES ('ODD00002', -42, -42, 'Won')$$,
    '23503', NULL,
    'a deal cannot point at an agent that does not exist'
);
SELECT throws_ok(
    $$INSERT INTO public.accounts (account_name) VALUES (NULL)$$,
    '23502', NULL,
    'an account without a name is refused'
);
SELECT is(
    (SELECT count(*)::int FROM public.sales_pipeline WHERE opportunity_id = 'ODD00001'),
    1,
    'the odd deal is there to be coped with'
);

SELECT * FROM finish();
ROLLBACK;
