"""The reporting views of schema dwh (procedures/olap/80_reporting): their names, and each
read whole and timed, as a dashboard reads it (make bench, the reporting tests)."""

from __future__ import annotations

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
