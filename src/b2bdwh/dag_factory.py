"""The one way a b2bdwh DAG is built: one SQLExecuteQueryOperator per step procedure,
in one straight chain (the steps serialise on the warehouse's pipeline lock).

etl.start_run creates the run; its INOUT p_run_id comes back as the XCom
[[run_id]], and every later step is called for that run, so that a DAG run
never works on a run started elsewhere. A step retried or cleared resumes its
run; etl.start_run itself never retries (that would start a second run).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG, Param, chain

RUN_ID = "{{ ti.xcom_pull(task_ids='etl.start_run')[0][0] }}"


def pipeline_dag(
    *, dag_id: str, pipeline: str, steps: list[str], schedule: Any, doc_md: str, tags: list[str]
) -> DAG:
    """A DAG that starts a `pipeline` run, then calls `steps`, one task each."""
    with DAG(
        dag_id=dag_id,
        doc_md=doc_md,
        schedule=schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["b2b_sales", "dwh", *tags],
        params={"batch_size": Param(None, type=["null", "integer"], minimum=1)},
        render_template_as_native_obj=True,  # None and numbers reach psycopg as themselves
        default_args={
            "conn_id": "b2b_sales_olap",
            "autocommit": True,
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
        },
    ) as dag:
        start_run = SQLExecuteQueryOperator(
            task_id="etl.start_run",
            sql=f"CALL etl.start_run('{pipeline}', %(batch_size)s::integer)",
            parameters={"batch_size": "{{ params.batch_size }}"},
            retries=0,
        )
        chain(
            start_run,
            *[
                SQLExecuteQueryOperator(
                    task_id=step,
                    sql=f"CALL {step}(%(run_id)s::bigint)",
                    parameters={"run_id": RUN_ID},
                )
                for step in steps
            ],
        )
    return dag
