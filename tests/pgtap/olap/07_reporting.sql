-- The reporting views and fact lineage over a tiny star built by hand in
-- this transaction: two agents (and a deleted one), a product with two
-- SCD2 versions and another with one, two accounts (and a deleted one),
-- six live deals and two deleted ones, and the monthly aggregate that the
-- live closed deals make. Each view must return exactly the figures worked
-- out by hand below, with deleted rows left out.
BEGIN;
SELECT plan(25);

-- Schema contract --------------------------------------------------------------
SELECT has_view('dwh', 'v_sales_by_month', 'dwh.v_sales_by_month exists');
SELECT has_view('dwh', 'v_agent_performance', 'dwh.v_agent_performance exists');
SELECT has_view('dwh', 'v_product_performance', 'dwh.v_product_performance exists');
SELECT has_view('dwh', 'v_pipeline_by_stage', 'dwh.v_pipeline_by_stage exists');
SELECT has_view('dwh', 'v_account_performance', 'dwh.v_account_performance exists');
SELECT has_function('dwh', 'fact_lineage', ARRAY['text'], 'dwh.fact_lineage(opportunity_id) exists');
SELECT ok(obj_description('dwh.v_sales_by_month'::regclass, 'pg_class') LIKE 'One row per close month%',
          'v_sales_by_month''s comment says what one row is');
SELECT ok(obj_description('dwh.v_agent_performance'::regclass, 'pg_class') LIKE 'One row per live sales agent%',
          'v_agent_performance''s comment says what one row is');
SELECT ok(obj_description('dwh.v_product_performance'::regclass, 'pg_class') LIKE 'One row per live product%',
          'v_product_performance''s comment says what one row is');
SELECT ok(obj_description('dwh.v_pipeline_by_stage'::regclass, 'pg_class') LIKE 'One row per open deal stage%',
          'v_pipeline_by_stage''s comment says what one row is');
SELECT ok(obj_description('dwh.v_account_performance'::regclass, 'pg_class') LIKE 'One row per live customer%',
          'v_account_performance''s comment says what one row is');
SELECT ok(obj_description('dwh.fact_lineage(text)'::regprocedure, 'pg_proc') IS NOT NULL,
          'dwh.fact_lineage carries a comment');

-- A tiny star -----------------------------------------------------------------------
INSERT INTO etl.run (pipeline, status, batch_size, window_applied, finished_at)
VALUES ('initial_load', 'succeeded', 1000, TRUE, now())
RETURNING run_id AS run1 \gset
SELECT dwh.extend_dim_date('2017-01-01', '2017-04-30');
INSERT INTO dwh.dim_sales_agent (sales_agent_key, sales_agent_id, sales_agent_name, manager_name,
                                 regional_office, is_deleted, run_id) VALUES
(1, 1, 'Ann Agent', 'Mia Manager', 'Central', FALSE, :run1),
(2, 2, 'Bob Agent', 'Max Manager', 'East', FALSE, :run1),
(3, 3, 'Gone Agent', 'Mia Manager', 'Central', TRUE, :run1);
INSERT INTO dwh.dim_product (product_key, product_id, product_name, series, sales_price, valid_from,
                             valid_to, is_current, run_id) VALUES
(1, 1, 'Widget (old name)', 'W', 100, '-infinity', '2017-02-01', FALSE, :run1),
(2, 1, 'Widget', 'W', 120, '2017-02-01', 'infinity', TRUE, :run1),
(3, 2, 'Gadget', 'G', 50, '-infinity', 'infinity', TRUE, :run1);
INSERT INTO dwh.dim_account (account_key, account_id, account_name, sector, office_location,
                             parent_account_id, is_deleted, run_id) VALUES
(1, 1, 'Acme', 'retail', 'Norway', NULL, FALSE, :run1),
(2, 2, 'Beta', 'medical', 'Chile', 1, FALSE, :run1),
(3, 3, 'Deleted Co', 'retail', 'Chile', NULL, TRUE, :run1);
INSERT INTO dwh.fact_sales_performance (
    opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key, engage_date_key,
    close_date_key, close_value, list_price, is_won, is_closed, days_to_close, is_deleted, run_id
) VALUES
-- id   account product agent stage engage    close     value  list won    closed days deleted
('F1',  1,      1,      1,    3,    20170110, 20170125, 90,    100, TRUE,  TRUE,  15,  FALSE, :run1),
('F2',  1,      2,      1,    3,    20170205, 20170215, 120,   120, TRUE,  TRUE,  10,  FALSE, :run1),
('F3',  2,      3,      2,    4,    20170110, 20170220, 0,     50,  FALSE, TRUE,  41,  FALSE, :run1),
('F4',  2,      3,      2,    3,    20170201, 20170301, 40,    50,  TRUE,  TRUE,  28,  FALSE, :run1),
('F5',  1,      2,      1,    2,    20170215, -1,       NULL,  120, FALSE, FALSE, NULL, FALSE, :run1),
('F6',  -1,     3,      2,    1,    -1,       -1,       NULL,  50,  FALSE, FALSE, NULL, FALSE, :run1),
('F7',  1,      2,      1,    3,    20170301, 20170320, 1000,  120, TRUE,  TRUE,  19,  TRUE,  :run1),
('F8',  2,      3,      2,    2,    20170101, -1,       NULL,  50,  FALSE, FALSE, NULL, TRUE,  :run1);
INSERT INTO dwh.fact_sales_monthly_aggregate (month_date_key, sales_agent_key, product_key, won_deals,
                                              lost_deals, won_value, run_id) VALUES
(20170101, 1, 1, 1, 0, 90, :run1),
(20170201, 1, 2, 1, 0, 120, :run1),
(20170201, 2, 3, 0, 1, 0, :run1),
(20170301, 2, 3, 1, 0, 40, :run1);
-- The summaries the product, account and pipeline views read, as the initial load builds them.
SELECT dwh.build_summaries(:run1);

SELECT set_eq(
    $$SELECT month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value
        FROM dwh.fact_sales_monthly_aggregate$$,
    $$SELECT * FROM dwh.monthly_aggregate_from_facts$$,
    'the hand-built aggregate is what the live closed facts make (the star is consistent)'
);

-- Sales by month ----------------------------------------------------------------------
SELECT results_eq(
    $$SELECT month_start, won_deals, lost_deals, closed_deals, won_value, win_rate, avg_won_value
        FROM dwh.v_sales_by_month ORDER BY month_start$$,
    $$VALUES ('2017-01-01'::date, 1, 0, 1, 90.00::numeric(18, 2), 1.0000, 90.00),
             ('2017-02-01', 1, 1, 2, 120.00, 0.5000, 120.00),
             ('2017-03-01', 1, 0, 1, 40.00, 1.0000, 40.00)$$,
    'v_sales_by_month: won and lost deals, won value and win rate per close month; the deleted win is left out'
);

-- Agent performance -------------------------------------------------------------------
SELECT results_eq(
    $$SELECT sales_agent_name, manager_name, regional_office, won_deals, lost_deals, closed_deals,
             won_value, win_rate, rank_in_office
        FROM dwh.v_agent_performance ORDER BY sales_agent_id$$,
    $$VALUES ('Ann Agent', 'Mia Manager', 'Central', 2, 0, 2, 210.00::numeric(18, 2), 1.0000, 1::bigint),
             ('Bob Agent', 'Max Manager', 'East', 1, 1, 2, 40.00, 0.5000, 1)$$,
    'v_agent_performance: one row per live agent with manager and office; the deleted agent is left out'
);

-- Product performance -----------------------------------------------------------------
SELECT results_eq(
    $$SELECT product_id, product_name, current_list_price, versions, deals, open_deals, won_deals,
             lost_deals, won_value, won_list_value, avg_discount, avg_discount_rate, overall_discount_rate
        FROM dwh.v_product_performance ORDER BY product_id$$,
    $$VALUES (1, 'Widget', 120::numeric, 2, 3, 1, 2, 0, 210.00::numeric(18, 2), 220.00::numeric(18, 2),
              5.00, 0.0500, 0.0455),
             (2, 'Gadget', 50, 1, 3, 1, 1, 1, 40.00, 50.00, 10.00, 0.2000, 0.2000)$$,
    'v_product_performance: both versions of a product together, named as the latest; won value '
    'against the list price of each deal''s version (average discount); deleted deals left out'
);

-- Pipeline by stage -------------------------------------------------------------------
SELECT results_eq(
    $$SELECT deal_stage_name, open_deals, list_value, deals_without_engage_date, avg_age_days,
             max_age_days, oldest_engage_date, as_of_date
        FROM dwh.v_pipeline_by_stage ORDER BY stage_order$$,
    $$VALUES ('Prospecting', 1, 50.00::numeric(18, 2), 1, NULL::numeric, NULL::integer, NULL::date,
              '2017-03-01'::date),
             ('Engaging', 1, 120.00, 0, 14.0, 14, '2017-02-15', '2017-03-01')$$,
    'v_pipeline_by_stage: open deals per stage, their list value and age up to the last date in the data '
    '(before today); the deleted open deal is left out'
);

-- Account performance -----------------------------------------------------------------
SELECT results_eq(
    $$SELECT account_key, account_name, parent_account_name, deals, open_deals, won_deals, lost_deals,
             won_value, win_rate, avg_days_to_close, first_engage_date, last_close_date
        FROM dwh.v_account_performance ORDER BY account_key$$,
    $$VALUES (-1, 'Unknown', NULL, 1, 1, 0, 0, 0.00::numeric(18, 2), NULL::numeric, NULL::numeric,
              NULL::date, NULL::date),
             (1, 'Acme', NULL, 3, 1, 2, 0, 210.00, 1.0000, 12.5, '2017-01-10', '2017-02-15'),
             (2, 'Beta', 'Acme', 2, 0, 1, 1, 40.00, 0.5000, 28.0, '2017-01-10', '2017-03-01')$$,
    'v_account_performance: deals per live account (and Unknown for deals without one); '
    'the deleted account and deleted deals are left out'
);

-- Deleting a deal removes it from every fact-based view (the summaries rebuilt) ------------------------------
UPDATE dwh.fact_sales_performance SET is_deleted = TRUE WHERE opportunity_id = 'F5';
SELECT dwh.build_summaries(:run1);
SELECT is(
    (SELECT open_deals FROM dwh.v_pipeline_by_stage WHERE deal_stage_name = 'Engaging'), 0,
    'a deal marked deleted leaves the pipeline'
);
SELECT is(
    (SELECT deals FROM dwh.v_account_performance WHERE account_id = 1), 2,
    'a deal marked deleted leaves its account''s figures'
);

-- Lineage -----------------------------------------------------------------------------
SELECT results_eq(
    format('SELECT run_id, pipeline, change_id, note FROM dwh.fact_lineage(%L)', 'F1'),
    format($$VALUES (%s::bigint, 'initial_load', NULL::bigint,
                     'initial load: the deal as the extract snapshot had it')$$, :run1),
    'a fact of an initial load: its run and the extract snapshot, no change rows'
);
INSERT INTO etl.run (pipeline, status, batch_size, window_applied, finished_at)
VALUES ('incremental_update', 'succeeded', 1000, TRUE, now())
RETURNING run_id AS run2 \gset
INSERT INTO etl.loading_metadata (run_id, step, table_name, status)
VALUES (:run2, 'etl.pull_change_window', 'etl.change_window', 'succeeded');
INSERT INTO etl.change_window (change_id, txid, table_name, operation, row_key, changed_at) VALUES
(11, '900'::xid8, 'sales_pipeline', 'U', 'F2', '2017-03-02 10:00'),
(12, '901'::xid8, 'sales_pipeline', 'U', 'F2', '2017-03-02 11:00'),
(13, '901'::xid8, 'sales_pipeline', 'U', 'F3', '2017-03-02 11:00'),
(14, '901'::xid8, 'accounts', 'U', '1', '2017-03-02 11:00');
UPDATE dwh.fact_sales_performance SET run_id = :run2 WHERE opportunity_id = 'F2';
SELECT results_eq(
    format('SELECT run_id, pipeline, change_id, txid::text, operation FROM dwh.fact_lineage(%L)', 'F2'),
    format($$VALUES (%1$s::bigint, 'incremental_update', 11::bigint, '900', 'U'::char),
                    (%1$s, 'incremental_update', 12, '901', 'U')$$, :run2),
    'a fact an incremental run rewrote: that run and the deal''s own changes in its window'
);
INSERT INTO etl.run (pipeline, status, batch_size, finished_at)
VALUES ('incremental_update', 'succeeded', 1000, now())
RETURNING run_id AS run3 \gset
INSERT INTO etl.loading_metadata (run_id, step, table_name, status)
VALUES (:run3, 'etl.pull_change_window', 'etl.change_window', 'succeeded');
SELECT results_eq(
    format('SELECT run_id, change_id, note LIKE %L FROM dwh.fact_lineage(%L)', '%no longer%', 'F2'),
    format($$VALUES (%s::bigint, NULL::bigint, TRUE)$$, :run2),
    'once a later run has pulled its window, the changes are reported as no longer held, not guessed'
);
SELECT is_empty(
    $$SELECT * FROM dwh.fact_lineage('no such deal')$$,
    'no lineage row for a deal that has no fact'
);
SELECT is(
    (SELECT is_deleted FROM dwh.fact_lineage('F7')), TRUE,
    'lineage says when the fact is marked deleted'
);

SELECT * FROM finish();
ROLLBACK;
