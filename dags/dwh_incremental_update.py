"""
### dwh_incremental_update
An Airflow DAG built by `b2bdwh.dag_factory`: one task per step procedure.
Applies every CRM change committed since the last applied snapshot: the steps of
`CALL etl.run_incremental_update()`, one task each. The window of changes is read by
snapshot visibility (a late-committing transaction is never skipped) and counts as
applied in the transaction that refreshes the monthly aggregate: a run that dies
earlier is followed by one that applies the same window again, whole. A DAG run
already going makes the next wait (`max_active_runs=1`). The DAG arrives unpaused and
runs at once: until an initial load has been started, and whenever another run is going
(the initial load, or a caller outside Airflow), `etl.start_run` starts no run (its log
says why) and the branch `run_started` goes to `no_run_started`: the DAG run succeeds
with its steps skipped, and the next one tries again. `etl.purge_change_log` lets the
source purge what is applied and older than `etl.config.change_retention`.
"""

from datetime import timedelta

from b2bdwh.dag_factory import pipeline_dag

# How often the warehouse follows the source: the one place to change it.
INTERVAL = timedelta(minutes=15)

pipeline_dag(
    dag_id="dwh_incremental_update",
    pipeline="incremental_update",
    schedule=INTERVAL,
    doc_md=__doc__,
    tags=["incremental_update"],
    when_busy="skip",
    steps=[
        "etl.pull_change_window",
        "dwh.load_dim_date",
        "dwh.load_dim_account",
        "dwh.load_dim_sales_agent",
        "dwh.load_dim_product",
        "dwh.load_deal_history",
        "dwh.load_fact_sales_performance",
        "dwh.load_fact_sales_monthly_aggregate",
        "etl.validate_run",
        "etl.purge_change_log",
        "etl.finish_run",
    ],
)
