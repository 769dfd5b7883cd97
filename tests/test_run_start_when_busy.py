"""etl.start_run's p_when_busy on real connections (what the DAGs rely on, issue 12.1):
'wait' commits between its tries and starts as soon as the run going has ended; 'skip'
and 'wait' callers started together through a barrier never both start, and a 'skip'
caller never fails. (The function underneath, etl.open_run, is tests/pgtap/olap/
10_run_start_when_busy.sql; the DAGs through a real Airflow, tests/test_airflow_cli.py.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

import dbtools

query, scalar, execute = dbtools.query, dbtools.scalar, dbtools.execute
ROUNDS = 8


def start_run(dsn: str, pipeline: str, when_busy: str) -> tuple[int | None, list[str]]:
    """CALL etl.start_run as the DAGs do (autocommit); returns the run id and the NOTICEs."""
    notices: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        (run_id,) = conn.execute(
            "CALL etl.start_run(%s, NULL, p_when_busy => %s)", (pipeline, when_busy)
        ).fetchone()
    return run_id, notices


@pytest.fixture
def olap(warehouse: dbtools.Warehouse) -> str:
    execute(warehouse.olap_dsn, "UPDATE etl.run SET status = 'failed' WHERE status = 'running'")
    return warehouse.olap_dsn


def test_skip_before_any_initial_load_starts_nothing_and_says_why(olap):
    run_id, notices = start_run(olap, "incremental_update", "skip")
    assert run_id is None
    assert notices == ["no incremental_update run started: no initial load yet"]
    assert query(olap, "SELECT * FROM etl.run") == []


def test_wait_starts_as_soon_as_the_run_between_steps_has_ended(olap):
    held, _ = start_run(olap, "initial_load", "refuse")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(start_run, olap, "initial_load", "wait")
        time.sleep(3)
        assert not waiting.done(), "it waits while the run is between steps"
        assert scalar(olap, "SELECT count(*) FROM etl.run") == 1, "and starts nothing"
        # Committing between tries: it holds no lock and no snapshot while it waits.
        assert scalar(olap, "SELECT etl.pipeline_lock_holder()") is None
        execute(olap, "CALL etl.abandon_run(%s)", (held,))
        run_id, notices = waiting.result(timeout=30)
    assert run_id == held + 1
    assert notices[0] == "another run is going: the initial_load run waits for it to end"
    assert notices[-1].startswith(f"run {run_id} started after waiting ")
    assert query(olap, "SELECT status FROM etl.run ORDER BY run_id") == [
        ("failed",),
        ("running",),
    ]
    execute(olap, "CALL etl.abandon_run(%s)", (run_id,))


def test_skip_and_wait_callers_together_never_both_start(olap):
    """Each round: an initial load exists; three incremental callers ('skip') and one
    initial-load caller ('wait') start together. At most one run is ever running; no skip
    caller fails; the waiting caller starts once whatever started first has ended."""
    execute(
        olap,
        "INSERT INTO etl.run (pipeline, batch_size, status, finished_at)"
        " VALUES ('initial_load', 10, 'succeeded', now())",
    )
    outcomes = []
    for _ in range(ROUNDS):
        barrier = threading.Barrier(4)

        def call(pipeline: str, when_busy: str, barrier=barrier) -> int | None:
            barrier.wait()
            return start_run(olap, pipeline, when_busy)[0]

        with ThreadPoolExecutor(4) as pool:
            skips = [pool.submit(call, "incremental_update", "skip") for _ in range(3)]
            waiter = pool.submit(call, "initial_load", "wait")
            started = [f.result(timeout=30) for f in skips]
            incremental = [run_id for run_id in started if run_id is not None]
            assert len(incremental) <= 1, started
            if incremental:
                time.sleep(1.5)
                assert not waiter.done(), "the initial load waits for the incremental run"
                execute(olap, "CALL etl.abandon_run(%s)", (incremental[0],))
            load = waiter.result(timeout=30)
        assert load is not None
        assert scalar(olap, "SELECT count(*) FROM etl.run WHERE status = 'running'") == 1
        execute(olap, "CALL etl.abandon_run(%s)", (load,))
        outcomes.append("incremental first" if incremental else "initial load first")
    print(f"{ROUNDS} rounds: {outcomes.count('incremental first')} with the incremental first")
