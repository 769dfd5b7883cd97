-- Change capture: every INSERT, UPDATE and DELETE on the four source tables
-- lands in cdc.change_log, written by statement-level triggers with
-- transition tables (a bulk statement pays one trigger call, not one per
-- row). The warehouse reads the log through postgres_fdw, in windows of
-- committed transactions (see cdc.source_snapshot).

CREATE TABLE cdc.change_log (
    change_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name text NOT NULL,
    operation char(1) NOT NULL,
    row_key text,
    row_data jsonb,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT change_log_operation_check CHECK (operation IN ('I', 'U', 'D', 'T')),
    CONSTRAINT change_log_key_check CHECK ((operation = 'T') = (row_key IS NULL))
);
-- A window is read by transaction id: from the previous snapshot's xmin on.
CREATE INDEX change_log_txid_idx ON cdc.change_log (txid);

COMMENT ON TABLE cdc.change_log IS
'One row per captured change to accounts, products, sales_agents and sales_pipeline, written only by '
'the capture triggers.';
COMMENT ON COLUMN cdc.change_log.change_id IS 'Order of capture (not of commit: see txid).';
COMMENT ON COLUMN cdc.change_log.txid IS
'The writing transaction (pg_current_xact_id): readers take changes by snapshot visibility of this id.';
COMMENT ON COLUMN cdc.change_log.table_name IS 'accounts, products, sales_agents or sales_pipeline.';
COMMENT ON COLUMN cdc.change_log.operation IS
'I insert, U update, D delete, T truncate (the table was emptied: the warehouse needs an initial load).';
COMMENT ON COLUMN cdc.change_log.row_key IS 'The row''s primary key, as text; NULL for T.';
COMMENT ON COLUMN cdc.change_log.row_data IS
'The row after the change, as jsonb, for I and U of products (their versions follow transactions); '
'NULL otherwise: the warehouse reads changed rows from the source.';
COMMENT ON COLUMN cdc.change_log.changed_at IS 'When the statement that made the change ran (clock time).';

-- Transactions that emptied a source table: their own re-inserts are not
-- captured row by row (the warehouse must reload from scratch anyway).
CREATE TABLE cdc.source_replaced (
    txid xid8 PRIMARY KEY,
    replaced_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE cdc.source_replaced IS
'Transactions that truncated a source table (b2bdwh generate, import-csv): rows they insert afterwards '
'are not logged one by one; a T change tells the warehouse to reload.';

-- Where each reader of the log has got to, reported by the warehouse; a
-- change is purged only once every reader is past it and it is old enough.
CREATE TABLE cdc.consumer (
    consumer_name text PRIMARY KEY,
    applied_xmin xid8 NOT NULL,
    retention interval NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE cdc.consumer IS
'Readers of cdc.change_log and their position: every change of a transaction older than applied_xmin is '
'applied. Updating a row purges what all readers applied and is older than its retention.';
