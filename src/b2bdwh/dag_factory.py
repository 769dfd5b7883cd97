"""The one way a b2bdwh DAG is built: one SQLExecuteQueryOperator per step procedure,
in one straight chain (the steps serialise on the warehouse's pipeline lock).

etl.start_run creates the run; its INOUT p_run_id comes back as the XCom
[[run_id]], and every later step is called for that run, so that a DAG run
never works on a run started elsewhere. A step retried or cleared resumes its
run; etl.start_run itself never retries (that would start a second run).

Another run going when a DAG run starts (the other DAG's, or one called from psql) is
handled by `when_busy`, always with Airflow's own operators and a decision the database
makes atomically (etl.start_run's p_when_busy, under the pipeline lock):

- "wait" (the initial load): a SqlSensor `etl.pipeline_idle` in reschedule mode waits,
  without holding a worker, until no run is going; then etl.start_run(..., 'wait'), which
  also waits, in the database, should another run have started since the sensor looked.
- "skip" (the incremental update): etl.start_run(..., 'skip') starts no run (p_run_id
  NULL, a NOTICE in the task's log says why) when another run is going or no initial load
  has been started yet; the BranchSQLOperator `run_started` then follows the steps only
  when a run was started, else the no-op `no_run_started`: the DAG run succeeds with its
  steps skipped.

DAGs arrive unpaused (is_paused_upon_creation=False, whatever airflow.cfg says): the set-up
is "trigger the initial load", and nothing a user does in any order fails a DAG run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import pendulum
from airflow.providers.common.sql.operators import sql as sql_operators
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.common.sql.sensors.sql import SqlSensor
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, chain

RUN_ID = "{{ ti.xcom_pull(task_ids='etl.start_run')[0][0] }}"
# The non-CALL tasks, and their exact SQL (tests/test_dags.py holds the DAGs to these).
IDLE_SENSOR = "etl.pipeline_idle"
IDLE_SQL = "SELECT etl.pipeline_idle()"
RUN_STARTED = "run_started"
RUN_STARTED_SQL = "SELECT %(run_id)s::bigint IS NOT NULL"
NO_RUN_STARTED = "no_run_started"
# How often the sensor looks, and how long it waits before it fails: a run going longer
# than this is not waited for (one idle between steps beyond etl.config run_idle_timeout
# counts as interrupted, and so the pipeline as idle, much sooner).
IDLE_POKE = timedelta(seconds=10)
IDLE_TIMEOUT = timedelta(hours=12)
# A failed task's retries, in every DAG of the project (the source's archiving too): a
# retried task resumes its work rather than repeating it (etl.start_run sets its own 0).
RETRIES = 2
RETRY_DELAY = timedelta(minutes=1)


class BranchSQLOperator(sql_operators.BranchSQLOperator):
    """Airflow's BranchSQLOperator with `parameters` templated, as they are in
    SQLExecuteQueryOperator and SqlSensor (common-sql leaves them out of this one's
    template_fields): the run id reaches its SQL from etl.start_run's XCom as a bound
    parameter, never formatted into the text. Nothing else is changed."""

    template_fields = (*sql_operators.BranchSQLOperator.template_fields, "parameters")


def pipeline_dag(
    *,
    dag_id: str,
    pipeline: str,
    steps: list[str],
    schedule: Any,
    doc_md: str,
    tags: list[str],
    when_busy: Literal["wait", "skip"],
    at_once: bool = True,
) -> DAG:
    """A DAG that starts a `pipeline` run, then calls `steps`, one task each; `when_busy`
    says what it does while another run is going (see the module's doc). `at_once` False
    leaves start_date out: Airflow then waits for the schedule's next date for a DAG it has
    never run, instead of running it at once for the latest past one."""
    with DAG(
        dag_id=dag_id,
        doc_md=doc_md,
        schedule=schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC") if at_once else None,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        tags=["b2b_sales", "dwh", *tags],
        params={"batch_size": Param(None, type=["null", "integer"], minimum=1)},
        render_template_as_native_obj=True,  # None and numbers reach psycopg as themselves
        default_args={
            "conn_id": "b2b_sales_olap",
            "autocommit": True,
            "retries": RETRIES,
            "retry_delay": RETRY_DELAY,
            # The procedures' NOTICEs (why no run started, how long it waited) in the task logs.
            "hook_params": {"enable_log_db_messages": True},
        },
    ) as dag:
        start_run = SQLExecuteQueryOperator(
            task_id="etl.start_run",
            sql=(
                f"CALL etl.start_run('{pipeline}', %(batch_size)s::integer, "
                f"p_when_busy => '{when_busy}')"
            ),
            parameters={"batch_size": "{{ params.batch_size }}"},
            retries=0,
        )
        step_tasks = [
            SQLExecuteQueryOperator(
                task_id=step,
                sql=f"CALL {step}(%(run_id)s::bigint)",
                parameters={"run_id": RUN_ID},
            )
            for step in steps
        ]
        if when_busy == "wait":
            idle = SqlSensor(
                task_id=IDLE_SENSOR,
                conn_id="b2b_sales_olap",
                sql=IDLE_SQL,
                mode="reschedule",
                poke_interval=IDLE_POKE,
                timeout=IDLE_TIMEOUT,
            )
            chain(idle, start_run, *step_tasks)
        else:
            run_started = BranchSQLOperator(
                task_id=RUN_STARTED,
                sql=RUN_STARTED_SQL,
                parameters={"run_id": RUN_ID},
                follow_task_ids_if_true=[step_tasks[0].task_id],
                follow_task_ids_if_false=[NO_RUN_STARTED],
            )
            chain(start_run, run_started, [step_tasks[0], EmptyOperator(task_id=NO_RUN_STARTED)])
            chain(*step_tasks)
    return dag
