-- Pipeline control: configuration, runs, per-step metadata, errors,
-- validation results and data-quality issues. What a DBA reads to know what
-- the pipeline did.

CREATE TABLE etl.config (
    key text PRIMARY KEY,
    value text NOT NULL,
    description text NOT NULL
);
COMMENT ON TABLE etl.config IS 'Pipeline knobs, one row per setting; read by the procedures at run time.';

INSERT INTO etl.config (key, value, description) VALUES
('batch_size', '200000', 'Rows per committed batch when a step works in batches.'),
('date_min', '1990-01-01', 'Earliest date the warehouse accepts; older dates are quarantined.'),
('date_max', '2099-12-31', 'Latest date the warehouse accepts; later dates are quarantined.'),
('date_margin_days', '366', 'Days dim_date extends beyond the dates seen in the source.'),
('max_close_value', '1000000000000', 'Largest close value accepted; larger ones are quarantined.');

CREATE TABLE etl.run (
    run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline text NOT NULL,
    status text NOT NULL DEFAULT 'running',
    batch_size integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    started_by text NOT NULL DEFAULT current_user,
    source_snapshot pg_snapshot,
    source_snapshot_at timestamptz,
    message text,
    CONSTRAINT run_pipeline_check CHECK (pipeline IN ('initial_load', 'incremental_update')),
    CONSTRAINT run_status_check CHECK (status IN ('running', 'succeeded', 'failed'))
);
-- Two runs never interleave: at most one is running at a time.
CREATE UNIQUE INDEX run_one_running_idx ON etl.run ((TRUE)) WHERE status = 'running';
COMMENT ON TABLE etl.run IS 'One row per pipeline run (initial load or incremental update).';
COMMENT ON COLUMN etl.run.source_snapshot IS
'The source snapshot (pg_current_snapshot) the run read: the next incremental run starts exactly here.';
COMMENT ON COLUMN etl.run.status IS 'running, succeeded or failed; at most one run is running.';

CREATE TABLE etl.loading_metadata (
    loading_metadata_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES etl.run (run_id),
    step text NOT NULL,
    table_name text NOT NULL,
    status text NOT NULL DEFAULT 'running',
    rows_in bigint NOT NULL DEFAULT 0,
    rows_inserted bigint NOT NULL DEFAULT 0,
    rows_updated bigint NOT NULL DEFAULT 0,
    rows_deleted bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    batches integer NOT NULL DEFAULT 0,
    resume_after text,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    message text,
    CONSTRAINT loading_metadata_status_check CHECK (status IN ('running', 'succeeded', 'failed')),
    CONSTRAINT loading_metadata_step_key UNIQUE (run_id, step, table_name)
);
CREATE INDEX loading_metadata_run_idx ON etl.loading_metadata (run_id);
COMMENT ON TABLE etl.loading_metadata IS
'One row per run, step and table written: status, row counts, timings. A step that works in batches '
'records its place (resume_after) in the same transaction as each batch.';
COMMENT ON COLUMN etl.loading_metadata.rows_in IS 'Rows the step read from its input.';
COMMENT ON COLUMN etl.loading_metadata.rows_rejected IS 'Rows quarantined in etl.error_log.';
COMMENT ON COLUMN etl.loading_metadata.resume_after IS
'Key of the last row of the last committed batch; a re-run of the step continues after it.';

CREATE TABLE etl.error_log (
    error_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint REFERENCES etl.run (run_id),
    procedure_name text NOT NULL,
    kind text NOT NULL,
    sqlstate text,
    message text NOT NULL,
    detail text,
    hint text,
    context text,
    table_name text,
    business_key text,
    record jsonb,
    logged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT error_log_kind_check CHECK (kind IN ('error', 'quarantine'))
);
CREATE INDEX error_log_run_idx ON etl.error_log (run_id);
CREATE INDEX error_log_quarantine_key_idx ON etl.error_log (table_name, business_key)
WHERE kind = 'quarantine';
COMMENT ON TABLE etl.error_log IS
'Errors that failed a step (kind error, with SQLSTATE and context) and source rows quarantined by a '
'hard data-quality rule (kind quarantine, with the record and the reason).';

CREATE TABLE etl.validation_result (
    validation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES etl.run (run_id),
    check_name text NOT NULL,
    passed boolean NOT NULL,
    expected text,
    actual text,
    details jsonb,
    checked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX validation_result_run_idx ON etl.validation_result (run_id);
COMMENT ON TABLE etl.validation_result IS
'One row per check etl.validate ran for a run, with what it expected and found.';

CREATE TABLE etl.data_quality_issue (
    issue_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES etl.run (run_id),
    table_name text NOT NULL,
    business_key text NOT NULL,
    rule text NOT NULL,
    record jsonb NOT NULL,
    found_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX data_quality_issue_run_idx ON etl.data_quality_issue (run_id);
COMMENT ON TABLE etl.data_quality_issue IS
'Source rows that broke a soft rule (loaded anyway): close before engage, Won without value, negative value.';
