"""
### dwh_initial_load
Full rebuild of the warehouse from one snapshot of the CRM source: the steps of
`CALL etl.run_initial_load()`, one task each (param `batch_size`: rows per committed
batch, default `etl.config`). A failed step logs its error in `etl.error_log` and fails
the run in `etl.run`; retried or cleared, it resumes that run. `etl.start_run` never
retries (that would start a second run). The steps serialise on a pipeline lock, so
the DAG is one straight chain.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG, Param, chain

# The steps after etl.start_run, in order; each task id is its procedure's name.
STEPS = [
    "etl.extract_source",
    "dwh.load_dim_date",
    "dwh.load_dim_account",
    "dwh.load_dim_sales_agent",
    "dwh.load_dim_product",
    "dwh.load_fact_sales_performance",
    "dwh.load_fact_sales_monthly_aggregate",
    "etl.validate_run",
    "etl.finish_run",
]
# The run etl.start_run created (its INOUT p_run_id comes back as the XCom [[run_id]]).
RUN_ID = "{{ ti.xcom_pull(task_ids='etl.start_run')[0][0] }}"

with DAG(
    dag_id="dwh_initial_load",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["b2b_sales", "dwh", "initial_load"],
    params={"batch_size": Param(None, type=["null", "integer"], minimum=1)},
    render_template_as_native_obj=True,  # None and numbers reach psycopg as themselves
    default_args={
        "conn_id": "b2b_sales_olap",
        "autocommit": True,
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
    },
):
    start_run = SQLExecuteQueryOperator(
        task_id="etl.start_run",
        sql="CALL etl.start_run('initial_load', %(batch_size)s::integer)",
        parameters={"batch_size": "{{ params.batch_size }}"},
        retries=0,
    )
    steps = [
        SQLExecuteQueryOperator(
            task_id=step, sql=f"CALL {step}(%(run_id)s::bigint)", parameters={"run_id": RUN_ID}
        )
        for step in STEPS
    ]
    chain(start_run, *steps)
