"""
### crm_archive_closed_deals
The CRM's archiving, from Airflow: one task calls the source's own routine
`public.archive_closed_deals` on the connection `b2b_sales` (the CRM, not the warehouse); it
moves the closed deals (Won, Lost) that closed before a cut-off into
`public.sales_pipeline_archive`, in committed batches. The warehouse keeps them live, marked
archived. Params: `closed_before` (a date such as `2017-01-01`; empty: the rule below), `keep`
(default `2 years`; years, months, weeks or days) and `batch_rows` (deals per committed batch,
default 10000). The cut-off is `closed_before` when given, else the first day of the month of
the day `keep` before the run's `run_after` (in UTC): the scheduled run of 2026-03-01, like a
manual one on 2026-03-17, archives the deals closed before 2024-03-01.
Runs at 00:00 UTC on the 1st of each month. It arrives unpaused (a triggered run starts at
once) and its first scheduled run is the next 1st: it has no start_date, since with one in
the past Airflow would run it at once for the last 1st. The generated and exported data end in
January 2018: the default cut-off archives all their closed deals.
A failed try is retried: the routine is resumable (a stopped batch is rolled back whole,
calling again moves what is left) and a retry keeps its run's cut-off, so it finishes the work
and moves no deal twice. The task's log shows the routine's notices (each batch; the deals
left because the CRM held them locked, for a later run); its XCom is the number of deals
moved. The connection's user must be allowed to call it (a superuser or a DBA role: README).
"""

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG, CronTriggerTimetable, Param

from b2bdwh.dag_factory import RETRIES, RETRY_DELAY

# Named, rather than "@monthly" (whose timetable depends on airflow.cfg's
# create_cron_data_intervals): a run's run_after is the 1st of its month, 00:00 UTC.
MONTHLY = CronTriggerTimetable("0 0 1 * *", timezone="UTC")
# `keep` as PostgreSQL reads an interval, whole positive units only: no cut-off in the future.
INTERVAL = r"^[0-9]+ (year|month|week|day)s?( [0-9]+ (year|month|week|day)s?)*$"

with DAG(
    dag_id="crm_archive_closed_deals",
    doc_md=__doc__,
    schedule=MONTHLY,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=["b2b_sales", "crm", "archiving"],
    params={
        "closed_before": Param(None, type=["null", "string"], format="date"),
        "keep": Param("2 years", type="string", pattern=INTERVAL),
        "batch_rows": Param(10000, type="integer", minimum=1),
    },
    render_template_as_native_obj=True,  # None and numbers reach psycopg as themselves
    default_args={"retries": RETRIES, "retry_delay": RETRY_DELAY},
):
    SQLExecuteQueryOperator(
        task_id="public.archive_closed_deals",
        conn_id="b2b_sales",
        # The cut-off computed by PostgreSQL from bound values, in UTC whatever the session's
        # TimeZone. Autocommit: the procedure COMMITs per batch, in no transaction block.
        sql="CALL public.archive_closed_deals(coalesce(%(closed_before)s::date, date_trunc('month',"
        " (%(run_after)s::timestamptz AT TIME ZONE 'UTC') - %(keep)s::interval)::date),"
        " %(batch_rows)s::integer, NULL)",
        parameters={
            "closed_before": "{{ params.closed_before }}",
            "run_after": "{{ dag_run.run_after }}",
            "keep": "{{ params.keep }}",
            "batch_rows": "{{ params.batch_rows }}",
        },
        autocommit=True,
        # The routine's NOTICEs (each batch, the deals it left) in the task's log.
        hook_params={"enable_log_db_messages": True},
    )
