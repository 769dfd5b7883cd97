-- The CSV importer's log (b2bdwh import-csv): one row per import, and one
-- row per input row that was rejected or loaded with an issue. It lives in
-- its own schema: replacing the four source tables leaves it in place, so
-- the history of imports survives every import.

CREATE SCHEMA import;

CREATE TABLE import.import_run (
    import_run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    directory text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    db_user text NOT NULL DEFAULT current_user,
    os_user text,
    run_summary jsonb NOT NULL
);

CREATE TABLE import.rejected_row (
    import_run_id bigint NOT NULL
    REFERENCES import.import_run (import_run_id) ON DELETE CASCADE,
    file_name text NOT NULL,
    line_number integer NOT NULL,
    kind text NOT NULL,
    reason_code text NOT NULL,
    reason text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (import_run_id, file_name, line_number),
    CONSTRAINT rejected_row_kind_check CHECK (kind IN ('rejected', 'kept'))
);

COMMENT ON SCHEMA import IS
'The CSV importer''s log: its runs and the input rows it rejected or loaded '
'with an issue. Not part of the CRM source; imports never empty it.';

COMMENT ON TABLE import.import_run IS
'One row per successful b2bdwh import-csv run, written in the same '
'transaction as the data it loaded (a failed import leaves no row).';
COMMENT ON COLUMN import.import_run.import_run_id IS
'The import id printed by the importer; key of its rows in '
'import.rejected_row.';
COMMENT ON COLUMN import.import_run.directory IS
'Absolute path of the folder the four CSV files were read from.';
COMMENT ON COLUMN import.import_run.started_at IS
'When the importer started reading the files.';
COMMENT ON COLUMN import.import_run.finished_at IS
'When the data was written, just before the commit.';
COMMENT ON COLUMN import.import_run.db_user IS
'The database role that ran the import.';
COMMENT ON COLUMN import.import_run.os_user IS
'The operating-system user that ran the importer, when known.';
COMMENT ON COLUMN import.import_run.run_summary IS
'What the importer printed, as data: per file (files.<name>) rows read, '
'loaded, matched by normalised names, rejected and kept with an issue, '
'with the file''s size and sha256; the name mappings (mappings: file, '
'column, from, to, rows); the reasons with their row counts (reasons: '
'file, kind, reason, rows); the rows in each source table afterwards.';

COMMENT ON TABLE import.rejected_row IS
'One row per input row that an import did not load as it was: '
'kind = ''rejected'' rows were not loaded at all; kind = ''kept'' rows '
'were loaded with an unresolvable field set to NULL. Query one import '
'with WHERE import_run_id = <the id the importer printed>.';
COMMENT ON COLUMN import.rejected_row.import_run_id IS
'The import that read the row.';
COMMENT ON COLUMN import.rejected_row.file_name IS
'The file the row came from: accounts.csv, products.csv, sales_teams.csv '
'or sales_pipeline.csv.';
COMMENT ON COLUMN import.rejected_row.line_number IS
'Line in the file where the row starts; line 1 is the header.';
COMMENT ON COLUMN import.rejected_row.kind IS
'rejected: the row was not loaded (unknown or empty sales_agent, product '
'or account, duplicate opportunity_id, duplicate or empty name, empty '
'deal_stage). kept: the row was loaded, but a reference in it could not '
'be resolved and was loaded as NULL (an unknown subsidiary_of in '
'accounts.csv gives an account with no parent).';
COMMENT ON COLUMN import.rejected_row.reason_code IS
'A stable code for the first problem found, for filtering: '
'unknown_sales_agent, unknown_product, unknown_account, unknown_parent, '
'empty_sales_agent, empty_product, empty_opportunity_id, '
'empty_deal_stage, empty_name, duplicate_opportunity_id, duplicate_name, '
'duplicate_normalised_name.';
COMMENT ON COLUMN import.rejected_row.reason IS
'Every problem found in the row, in words, separated by "; ".';
COMMENT ON COLUMN import.rejected_row.record IS
'The row exactly as read: a JSON object from the header''s column names '
'to the raw field values (untrimmed; an empty field is "").';
