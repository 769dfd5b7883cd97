"""
### dwh_horizon_move
An Airflow DAG built by `b2bdwh.dag_factory`: one task per step procedure.
Moves facts across the horizon: the steps of `CALL etl.run_horizon_move()`, one task
each. `etl.config` `cold_horizon` (default `2 years`: the first day of the month two
years before the run's start) says which deals are old; their facts move to the cold
part of `dwh.fact_sales_performance` (`dwh.fact_sales_performance_cold`), any the
horizon no longer covers come back hot, in committed batches (param `batch_size`,
default `etl.config`), each move counted in `etl.loading_metadata`. Facts keep their
content: aggregates, summaries and reports do not change. Runs at 03:00 UTC on the 1st
of each month; it arrives unpaused, and its first scheduled run is the next 1st (no
start_date: not one at once for the last; trigger it to move now). While another run
is going (an incremental run), the sensor `etl.pipeline_idle` waits for it, in
reschedule mode, and `etl.start_run` waits in the database should one start in
between. A failed or interrupted step, retried or cleared, resumes: what is in its
place is never moved again.
"""

from airflow.sdk import CronTriggerTimetable

from b2bdwh.dag_factory import pipeline_dag

# Named, rather than "@monthly" (whose timetable depends on airflow.cfg).
MONTHLY = CronTriggerTimetable("0 3 1 * *", timezone="UTC")

pipeline_dag(
    dag_id="dwh_horizon_move",
    pipeline="horizon_move",
    schedule=MONTHLY,
    at_once=False,
    doc_md=__doc__,
    tags=["horizon_move"],
    when_busy="wait",
    steps=[
        "dwh.move_facts_across_horizon",
        "etl.validate_run",
        "etl.finish_run",
    ],
)
