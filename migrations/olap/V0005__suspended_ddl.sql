-- Keys, foreign keys and indexes that a bulk load set aside, kept here so
-- that they are put back exactly, even by a later run after a crash.

CREATE TABLE etl.suspended_ddl (
    table_name regclass NOT NULL,
    object_name name NOT NULL,
    kind text NOT NULL,
    definition text NOT NULL,
    suspended_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (table_name, object_name),
    CONSTRAINT suspended_ddl_kind_check CHECK (kind IN ('key', 'foreign key', 'index'))
);
COMMENT ON TABLE etl.suspended_ddl IS
'Keys, foreign keys and indexes dropped for a bulk load (etl.suspend_ddl) and not yet restored '
'(etl.restore_ddl). Empty whenever no bulk load is in progress; validation checks it.';
