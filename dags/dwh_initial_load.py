"""
### dwh_initial_load
An Airflow DAG built by `b2bdwh.dag_factory`: one task per step procedure.
Full rebuild of the warehouse from one snapshot of the CRM source: the steps of
`CALL etl.run_initial_load()`, one task each (param `batch_size`: rows per committed
batch, default `etl.config`). Manual trigger only; the DAG arrives unpaused, so
`airflow dags trigger dwh_initial_load` runs at once.
While another run is going (an incremental run between steps), the sensor
`etl.pipeline_idle` waits for it, in reschedule mode, before `etl.start_run`, which
also waits (in the database) should one start in between: the initial load is never
refused, and no run is given up. A failed step logs its error in `etl.error_log` and fails
the run in `etl.run`; retried or cleared, it resumes that run. `etl.start_run` never
retries (that would start a second run). The steps serialise on a pipeline lock, so
the DAG is one straight chain.
"""

from b2bdwh.dag_factory import pipeline_dag

pipeline_dag(
    dag_id="dwh_initial_load",
    pipeline="initial_load",
    schedule=None,
    doc_md=__doc__,
    tags=["initial_load"],
    when_busy="wait",
    steps=[
        "etl.extract_source",
        "etl.purge_change_log",
        "dwh.load_dim_date",
        "dwh.load_dim_account",
        "dwh.load_dim_sales_agent",
        "dwh.load_dim_product",
        "dwh.load_fact_sales_performance",
        "dwh.load_deal_history",
        "dwh.load_fact_sales_monthly_aggregate",
        "etl.validate_run",
        "etl.finish_run",
    ],
)
