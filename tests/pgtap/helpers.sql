-- Shared helpers for the warehouse's pgTAP files, installed in the test
-- template (never by the migrations).
CREATE SCHEMA IF NOT EXISTS tests;

-- tests.open_step(pipeline, step, table): a running run with one open step,
-- as etl.start_run and etl.begin_step would leave them, without the
-- pipeline lock and without committing. Returns the loading_metadata id to
-- pass to a unit function.
CREATE OR REPLACE FUNCTION tests.open_step(p_pipeline text, p_step text, p_table text)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_run_id bigint;
    v_id bigint;
BEGIN
    SELECT run_id INTO v_run_id FROM etl.run WHERE status = 'running';
    IF v_run_id IS NULL THEN
        INSERT INTO etl.run (pipeline, batch_size, source_snapshot_at)
        VALUES (p_pipeline, 1000, now())
        RETURNING run_id INTO v_run_id;
    END IF;
    INSERT INTO etl.loading_metadata (run_id, step, table_name)
    VALUES (v_run_id, p_step, p_table)
    ON CONFLICT (run_id, step, table_name) DO UPDATE SET status = 'running'
    RETURNING loading_metadata_id INTO v_id;
    RETURN v_id;
END
$fn$;

-- tests.stage(...): one staged opportunity with sensible defaults.
CREATE OR REPLACE FUNCTION tests.stage_deal(
    p_opportunity_id text,
    p_deal_stage text DEFAULT 'Won',
    p_engage_date date DEFAULT '2017-01-10',
    p_close_date date DEFAULT '2017-02-10',
    p_close_value numeric DEFAULT 1000,
    p_account_id integer DEFAULT 1,
    p_product_id integer DEFAULT 1,
    p_sales_agent_id integer DEFAULT 1
)
RETURNS void
LANGUAGE sql
AS $fn$
    INSERT INTO etl.stage_sales_pipeline (
        opportunity_id, sales_agent_id, product_id, account_id, deal_stage,
        engage_date, close_date, close_value
    ) VALUES (
        p_opportunity_id, p_sales_agent_id, p_product_id, p_account_id, p_deal_stage,
        p_engage_date, p_close_date, p_close_value
    );
$fn$;
