"""
### dwh_horizon_move
An Airflow DAG built by `b2bdwh.dag_factory`: one task per step procedure.
Moves facts across the horizon: the steps of `CALL etl.run_horizon_move()`, one task
each. `etl.config` `cold_horizon` (default `2 years`: the first day of the month two
years before the run's start) says which deals are old; their facts move to the cold
part of `dwh.fact_sales_performance` (`dwh.fact_sales_performance_cold`), any the
horizon no longer covers come back hot, in committed batches (param `batch_size`,
default `etl.config`), each move counted in `etl.loading_metadata`. Facts keep their
content: aggregates, summaries and reports do not change. Runs on the first of each
month; the DAG arrives unpaused. While another run is going (an incremental run), the
sensor `etl.pipeline_idle` waits for it, in reschedule mode, and `etl.start_run` waits
in the database should one start in between. A failed or interrupted step, retried or
cleared, resumes: what is in its place is never moved again.
"""

from b2bdwh.dag_factory import pipeline_dag

pipeline_dag(
    dag_id="dwh_horizon_move",
    pipeline="horizon_move",
    schedule="@monthly",
    doc_md=__doc__,
    tags=["horizon_move"],
    when_busy="wait",
    steps=[
        "dwh.move_facts_across_horizon",
        "etl.validate_run",
        "etl.finish_run",
    ],
)
