-- The pipelines' steps as data, and who executes a step.
--
-- etl.pipeline_step lists each pipeline's steps in order with the unit
-- function that does each step's work. etl.begin_step refuses a step that is
-- not one of its run's pipeline, or whose earlier steps have not all
-- succeeded in order since they last ran (a task marked success by hand in
-- Airflow must not let the aggregate step mark a window applied whose facts
-- were never written). Every unit checks, through etl.assert_step_executor,
-- that it runs for a step of this list that the calling backend opened and
-- still executes: a unit called out of band (by the ETL role, with an old
-- step's id) is refused.

CREATE TABLE etl.pipeline_step (
    pipeline text NOT NULL,
    position smallint NOT NULL,
    step text NOT NULL,
    table_name text NOT NULL,
    unit text NOT NULL,
    CONSTRAINT pipeline_step_pkey PRIMARY KEY (pipeline, step),
    CONSTRAINT pipeline_step_position_key UNIQUE (pipeline, position),
    CONSTRAINT pipeline_step_pipeline_check CHECK (pipeline IN ('initial_load', 'incremental_update'))
);

COMMENT ON TABLE etl.pipeline_step IS
'The steps of each pipeline in order: the step procedure, the table it writes and its unit function. '
'etl.begin_step and etl.assert_step_executor enforce it.';
COMMENT ON COLUMN etl.pipeline_step.position IS 'Order of the step in its pipeline (etl.start_run is 0).';
COMMENT ON COLUMN etl.pipeline_step.unit IS
'The unit function doing the step''s work (schema-qualified name): only this step may call it.';

INSERT INTO etl.pipeline_step (pipeline, position, step, table_name, unit) VALUES
('initial_load', 1, 'etl.extract_source', 'etl.stage_*', 'etl.stage_source'),
('initial_load', 2, 'etl.purge_change_log', 'src.cdc_consumer', 'etl.report_applied_position'),
('initial_load', 3, 'dwh.load_dim_date', 'dwh.dim_date', 'dwh.extend_dim_date_to_stage'),
('initial_load', 4, 'dwh.load_dim_account', 'dwh.dim_account', 'dwh.upsert_dim_account'),
('initial_load', 5, 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent', 'dwh.upsert_dim_sales_agent'),
('initial_load', 6, 'dwh.load_dim_product', 'dwh.dim_product', 'dwh.apply_product_versions'),
('initial_load', 7, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance', 'dwh.insert_fact_batch'),
(
    'initial_load', 8, 'dwh.load_fact_sales_monthly_aggregate', 'dwh.fact_sales_monthly_aggregate',
    'dwh.rebuild_monthly_aggregate'
),
('initial_load', 9, 'etl.validate_run', 'etl.validation_result', 'etl.check_run'),
('initial_load', 10, 'etl.finish_run', 'etl.run', 'etl.close_run'),
('incremental_update', 1, 'etl.pull_change_window', 'etl.change_window', 'etl.stage_change_window'),
('incremental_update', 2, 'dwh.load_dim_date', 'dwh.dim_date', 'dwh.extend_dim_date_to_stage'),
('incremental_update', 3, 'dwh.load_dim_account', 'dwh.dim_account', 'dwh.upsert_dim_account'),
('incremental_update', 4, 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent', 'dwh.upsert_dim_sales_agent'),
('incremental_update', 5, 'dwh.load_dim_product', 'dwh.dim_product', 'dwh.apply_product_versions'),
('incremental_update', 6, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance', 'dwh.insert_fact_batch'),
(
    'incremental_update', 7, 'dwh.load_fact_sales_monthly_aggregate', 'dwh.fact_sales_monthly_aggregate',
    'dwh.rebuild_monthly_aggregate'
),
('incremental_update', 8, 'etl.validate_run', 'etl.validation_result', 'etl.check_run'),
('incremental_update', 9, 'etl.purge_change_log', 'src.cdc_consumer', 'etl.report_applied_position'),
('incremental_update', 10, 'etl.finish_run', 'etl.run', 'etl.close_run');

-- The backend executing a step while it is 'running' (etl.begin_step sets it).
ALTER TABLE etl.loading_metadata ADD COLUMN executor_pid integer;
COMMENT ON COLUMN etl.loading_metadata.executor_pid IS
'The backend that opened the step and executes it (while running): only it may call the step''s unit.';
