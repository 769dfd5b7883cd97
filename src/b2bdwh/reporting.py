"""The reporting views of schema dwh (procedures/olap/80_reporting): their names, and each
read whole and timed, as a dashboard reads it (make bench, the reporting tests)."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from dataclasses import dataclass

import psycopg

VIEWS = (
    "dwh.v_sales_by_month",
    "dwh.v_agent_performance",
    "dwh.v_product_performance",
    "dwh.v_pipeline_by_stage",
    "dwh.v_account_performance",
)


@dataclass(frozen=True)
class ViewTiming:
    """One view read whole: the median time of the timed reads (to the client, every row
    turned into Python values), the median time the server took to compute them
    (EXPLAIN ANALYZE's execution time, no rows sent), and its rows. A view of 85,000 rows
    (the accounts at scale 1000) spends most of a full read in transfer and conversion:
    server_ms says what the query itself costs."""

    median_ms: float
    rows: int
    server_ms: float = 0.0


def time_views(conn: psycopg.Connection, repeats: int = 5) -> dict[str, ViewTiming]:
    """Each reporting view read whole `repeats` times after one warm-up read."""
    out = {}
    for view in VIEWS:
        conn.execute(f"SELECT * FROM {view}").fetchall()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            rows = len(conn.execute(f"SELECT * FROM {view}").fetchall())
            times.append(time.perf_counter() - started)
        server = []
        for _ in range(repeats):
            plan = conn.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT * FROM {view}")
            server.append(plan.fetchone()[0][0]["Execution Time"])
        out[view] = ViewTiming(statistics.median(times) * 1000, rows, statistics.median(server))
    return out


@dataclass(frozen=True)
class AsOfTiming:
    """An as-of question asked `calls` times (each read whole): the median and the slowest
    call, and the rows of the slowest."""

    question: str
    calls: int
    median_ms: float
    max_ms: float
    rows: int


# The history's latest complete quarter: the as-of questions are timed over it.
LATEST_QUARTER = """
SELECT (date_trunc('quarter', m.last) - interval '3 months')::date,
       (date_trunc('quarter', m.last) - interval '1 day')::date
  FROM (SELECT to_date(max(a.month_date_key)::text, 'YYYYMMDD') AS last
          FROM dwh.fact_sales_monthly_aggregate AS a WHERE a.month_date_key > 0) AS m"""


def time_as_of(conn: psycopg.Connection, repeats: int = 5) -> list[AsOfTiming]:
    """The as-of questions of the deal history over the latest complete quarter of the data:
    the open pipeline at the end of each of its days (one call per day, after one warm-up
    call), the stage durations of its deals closed in its three months, and the conversion
    of the deals that entered a stage in its first month (`repeats` calls each)."""
    row = conn.execute(LATEST_QUARTER).fetchone()
    if row is None or row[0] is None:
        return []
    first, last = row
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    questions = [
        (
            f"dwh.open_pipeline_as_of(day), each day of {first:%Y}Q{(first.month + 2) // 3}",
            "SELECT * FROM dwh.open_pipeline_as_of(%s)",
            [(day,) for day in days],
        ),
        (
            f"dwh.stage_durations('{first}', '{last}')",
            "SELECT * FROM dwh.stage_durations(%s, %s)",
            [(first, last)] * repeats,
        ),
        (
            f"dwh.stage_conversion('{first}')",
            "SELECT * FROM dwh.stage_conversion(%s)",
            [(first,)] * repeats,
        ),
    ]
    out = []
    for question, sql, calls in questions:
        conn.execute(sql, calls[0]).fetchall()
        times, slowest_rows = [], 0
        for params in calls:
            started = time.perf_counter()
            rows = len(conn.execute(sql, params).fetchall())
            took = time.perf_counter() - started
            if not times or took > max(times):
                slowest_rows = rows
            times.append(took)
        out.append(
            AsOfTiming(
                question,
                len(calls),
                statistics.median(times) * 1000,
                max(times) * 1000,
                slowest_rows,
            )
        )
    return out
