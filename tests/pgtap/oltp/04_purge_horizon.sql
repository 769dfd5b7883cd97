-- How far the source purged its change log (cdc.purge_horizon), and who holds
-- the purge back: cdc.purge_consumed deletes only what every reader that
-- reported within its retention has applied, and moves the horizon one past
-- the newest transaction whose changes it deleted. A reader silent for
-- longer than its retention no longer holds the purge back; the horizon then
-- passes its position (the warehouse refuses that window: etl.assert_window_covered).
BEGIN;
SELECT plan(17);

-- The table --------------------------------------------------------------------------------
SELECT has_table('cdc', 'purge_horizon', 'cdc.purge_horizon records how far the change log was purged');
SELECT columns_are('cdc', 'purge_horizon', ARRAY['singleton', 'horizon', 'purged_at'],
                   'cdc.purge_horizon has the horizon and when it last moved');
SELECT col_type_is('cdc', 'purge_horizon', 'horizon', 'xid8', 'the horizon is a transaction id (xid8, as cdc.change_log.txid)');
SELECT results_eq(
    $$SELECT horizon::text, purged_at IS NULL FROM cdc.purge_horizon$$,
    $$VALUES ('0'::text, true)$$,
    'a new source has one horizon row: 0, nothing purged'
);
SELECT throws_ok(
    $$INSERT INTO cdc.purge_horizon (horizon) VALUES ('5')$$,
    '23505', NULL, 'there is only ever one horizon row'
);

-- Who may read it --------------------------------------------------------------------------
SET ROLE b2b_cdc_reader;
SELECT lives_ok($$SELECT horizon FROM cdc.purge_horizon$$, 'b2b_cdc_reader (the warehouse) reads the horizon');
SELECT throws_ok(
    $$UPDATE cdc.purge_horizon SET horizon = '0'$$,
    '42501', NULL, 'b2b_cdc_reader cannot move the horizon back (the warehouse would apply a window with holes)'
);
RESET ROLE;
SET ROLE b2b_app;
SELECT throws_ok($$SELECT horizon FROM cdc.purge_horizon$$, '42501', NULL, 'b2b_app cannot read the horizon (nothing in cdc)');
RESET ROLE;

-- The purge and the horizon ----------------------------------------------------------------
-- Changes of long-gone transactions (ids far below this one's), by hand.
INSERT INTO cdc.change_log (txid, table_name, operation, row_key, changed_at) VALUES
('100', 'accounts', 'U', 'h:100', now() - interval '30 days'),
('300', 'accounts', 'U', 'h:300', now() - interval '30 days'),
('500', 'accounts', 'U', 'h:500', now() - interval '30 days'),
('700', 'accounts', 'U', 'h:700', now() - interval '30 days');

-- A reader silent for 8 days, longer than its 7 days' retention: it reports
-- now as itself (the reporting reader always holds back), at 200.
INSERT INTO cdc.consumer (consumer_name, applied_xmin, retention, reported_at) VALUES
('silent', '200', '7 days', now() - interval '8 days');
SELECT set_eq(
    $$SELECT row_key FROM cdc.change_log WHERE row_key LIKE 'h:%'$$,
    $$VALUES ('h:300'), ('h:500'), ('h:700')$$,
    'a reader''s own report holds the purge back at its position, however old its report time'
);
SELECT is((SELECT horizon::text FROM cdc.purge_horizon), '101',
          'the horizon moves one past the newest transaction whose changes were purged');

-- A live reader at 600 reports: the silent one no longer holds the purge back.
SET ROLE b2b_cdc_reader;
INSERT INTO cdc.consumer (consumer_name, applied_xmin, retention) VALUES ('live', '600', '7 days');
RESET ROLE;
SELECT set_eq(
    $$SELECT row_key FROM cdc.change_log WHERE row_key LIKE 'h:%'$$,
    $$VALUES ('h:700')$$,
    'a reader silent for longer than its retention stops holding the purge back: what it had not applied goes'
);
SELECT is((SELECT horizon::text FROM cdc.purge_horizon), '501',
          'the horizon passes the silent reader''s position (its next window will be refused)');
SELECT ok((SELECT purged_at IS NOT NULL FROM cdc.purge_horizon), 'the horizon says when it moved');

-- A lagging reader that reports within its retention holds the purge back.
INSERT INTO cdc.change_log (txid, table_name, operation, row_key, changed_at) VALUES
('650', 'accounts', 'U', 'h:650', now() - interval '30 days');
INSERT INTO cdc.consumer (consumer_name, applied_xmin, retention) VALUES ('lagging', '640', '7 days');
UPDATE cdc.consumer SET applied_xmin = '900', reported_at = clock_timestamp() WHERE consumer_name = 'live';
SELECT set_eq(
    $$SELECT row_key FROM cdc.change_log WHERE row_key LIKE 'h:%'$$,
    $$VALUES ('h:650'), ('h:700')$$,
    'a reader that reported within its retention holds back what it has not applied, however far the others are'
);
SELECT is((SELECT horizon::text FROM cdc.purge_horizon), '501',
          'a purge that deletes nothing leaves the horizon where it was');

-- A report with retention 0: the reporter still holds the purge back at its own position.
UPDATE cdc.consumer SET retention = '0 seconds', reported_at = clock_timestamp() WHERE consumer_name = 'lagging';
SELECT set_eq(
    $$SELECT row_key FROM cdc.change_log WHERE row_key LIKE 'h:%'$$,
    $$VALUES ('h:650'), ('h:700')$$,
    'a reader reporting with retention 0 is not dropped by its own report'
);
-- Once it is dropped (the live reader reports later), its changes go and the horizon passes it.
UPDATE cdc.consumer SET reported_at = clock_timestamp() WHERE consumer_name = 'live';
SELECT is((SELECT horizon::text FROM cdc.purge_horizon), '701',
          'a reader with retention 0 that is not the one reporting no longer holds the purge back');

SELECT * FROM finish();
ROLLBACK;
