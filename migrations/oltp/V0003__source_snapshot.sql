-- The schema of change capture, and the one view the warehouse reads to know
-- exactly which committed transactions an extract saw.

CREATE SCHEMA cdc;
COMMENT ON SCHEMA cdc IS 'Change capture for the warehouse: change log and snapshots. Not for the application.';

-- In the warehouse's REPEATABLE READ remote transaction, pg_current_snapshot()
-- is that transaction's snapshot: the same one its table reads use.
CREATE VIEW cdc.source_snapshot AS
SELECT
    pg_current_snapshot()::text AS snapshot,
    now() AS taken_at;

COMMENT ON VIEW cdc.source_snapshot IS
'The reader''s transaction snapshot (pg_current_snapshot) and time: which source transactions it sees.';
