"""Faults in the middle of a run: each one fails the run with a complete trace, leaves
nothing half-applied, and the next run (or a retry of the failed step, as Airflow does)
ends where an uninterrupted run ends.

What test_incremental_crash, test_incremental_concurrency and test_initial_load already
prove (a killed one-call run is superseded and its window applied once; runs racing
writers) is not repeated. Here:

a) the source refuses connections, between steps and in the middle of a step (its
   postgres_fdw connection terminated on the source side, the foreign server pointed at a
   port nobody listens on), for the initial load and for an incremental update;
b) a lock_timeout set by the ETL session, and a statement_timeout set with ALTER DATABASE,
   fire inside a step that waits on a dwh table another connection holds;
c) a step's backend is terminated while Airflow-style step calls are between retries; a
   one-call run's backend is terminated and the next run completes its trace; the client
   process running a CALL is SIGKILLed, with and without client_connection_check_interval.

The failure trace: the run 'failed' with the step named in its message, the step 'failed'
in etl.loading_metadata, the error with its SQLSTATE in etl.error_log, no step left
'running', and nobody holding the pipeline lock. A backend that died cannot write any of
that: the next caller that takes the pipeline lock does (SQLSTATE B2B02, see
etl.record_interrupted_run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import conninfo, sql

import dbtools
import warehouse_compare as wc
from b2bdwh import generate, simulate, status

SCALE = 0.05  # 440 deals
BATCH = 50  # several fact batches per run
CHANGES = 300  # simulated CRM changes before each faulty run

INITIAL_STEPS, INCREMENTAL_STEPS = wc.INITIAL_STEPS, wc.INCREMENTAL_STEPS
# Star schema parts of warehouse_compare.exact_state (dim_date may grow in a step that
# committed before the fault: harmless, and not a change to the star's content).
STAR = ("accounts", "agents", "product_versions", "facts", "aggregate")


@dataclass
class Rig:
    oltp: str
    olap: str
    fresh: str
    seed: int = 0

    def simulate(self) -> None:
        """CRM changes committed in the source, a new set each time."""
        self.seed += 1
        simulate.simulate(self.oltp, CHANGES, seed=self.seed)


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    generate.generate(warehouse.oltp_dsn, SCALE)
    name, fresh = wc.attach_warehouse(warehouse.oltp_dsn, "faults_fresh")
    wc.set_config(fresh, "consumer_name", "faults_fresh")
    yield Rig(warehouse.oltp_dsn, warehouse.olap_dsn, fresh)
    dbtools.drop_database(name)


@pytest.fixture
def loaded(rig: Rig) -> Iterator[Rig]:
    """A warehouse loaded from the source as it is, then CRM changes it has not seen."""
    wc.run_initial(rig.olap)
    rig.simulate()
    yield rig
    set_database_timeout(rig.olap, None)  # whatever a test left behind


def set_database_timeout(olap: str, value: str | None) -> None:
    """ALTER DATABASE <the warehouse> SET (or RESET) statement_timeout."""
    name = sql.Identifier(conninfo.conninfo_to_dict(olap)["dbname"])
    if value is None:
        statement = sql.SQL("ALTER DATABASE {} RESET statement_timeout").format(name)
    else:
        statement = sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(
            name, sql.Literal(value)
        )
    with psycopg.connect(olap, autocommit=True) as conn:
        conn.execute(statement)


def start_run(olap: str, pipeline: str) -> int:
    """etl.start_run as the DAG's first task calls it: the new run's id."""
    with psycopg.connect(olap, autocommit=True) as conn:
        return conn.execute("CALL etl.start_run(%s, %s)", (pipeline, BATCH)).fetchone()[0]


# --- the trace ----------------------------------------------------------------------------------


def star_state(olap: str) -> dict[str, dict]:
    state = wc.exact_state(olap)
    return {name: state[name] for name in STAR}


def assert_failed_with_trace(olap: str, run_id: int, step: str, sqlstates: set[str]) -> list:
    """The run failed at `step` and every trace says so; returns its error_log rows."""
    status, message, finished = wc.fetch(
        olap, "SELECT status, message, finished_at FROM etl.run WHERE run_id = %s", (run_id,)
    )[0]
    assert status == "failed" and finished is not None, (status, message)
    assert message.startswith(f"{step} failed: ") or message.startswith("interrupted"), message
    steps = dict(
        wc.fetch(olap, "SELECT step, status FROM etl.loading_metadata WHERE run_id = %s", (run_id,))
    )
    assert steps[step] == "failed", steps
    assert "running" not in steps.values(), steps
    errors = wc.fetch(
        olap,
        "SELECT procedure_name, sqlstate, message FROM etl.error_log"
        " WHERE run_id = %s AND kind = 'error' ORDER BY error_id",
        (run_id,),
    )
    assert errors, f"run {run_id} failed without an error in etl.error_log"
    assert errors[-1][0] == step and errors[-1][1] in sqlstates, errors
    assert wc.scalar(olap, "SELECT etl.pipeline_lock_holder()") is None
    return errors


def assert_ends_like_a_fresh_load(rig: Rig) -> None:
    run_id, _pipeline, status, message = wc.last_run(rig.olap)
    assert status == "succeeded", (run_id, message)
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.olap, rig.fresh, rig.oltp)
    wc.assert_consistent(rig.olap)


def call_steps(olap: str, steps: list[str], run_id: int | None = None) -> None:
    """Each step in its own CALL on its own connection, as the Airflow tasks do."""
    for step in steps:
        dbtools.execute(olap, f"CALL {step}(%s)", (run_id,))


# --- a) the source refuses connections ----------------------------------------------------------


@contextmanager
def source_refusing(olap: str) -> Iterator[None]:
    """While inside: the foreign server points at a port nobody listens on."""
    [(options,)] = wc.fetch(
        olap, "SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'b2b_sales_source'"
    )
    port = dict(o.split("=", 1) for o in options)["port"]
    dbtools.execute(olap, "ALTER SERVER b2b_sales_source OPTIONS (SET port '1')")
    try:
        yield
    finally:
        dbtools.execute(olap, f"ALTER SERVER b2b_sales_source OPTIONS (SET port '{int(port)}')")


def cut_source_connections(oltp: str) -> int:
    """Terminate, on the source, the warehouse's open postgres_fdw connections."""
    return wc.scalar(
        oltp,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'b2b_sales_olap' AND datname = current_database()",
    )


# Where the source goes away: at a step's start (between steps), or inside a step whose
# remote transaction is open: after its first remote read (the next one fails), or after
# its last (releasing the step's remote savepoint fails, still inside the step).
SOURCE_FAULTS = {
    "initial_before_extract": ("initial_load", lambda p: p.at_step("etl.extract_source")),
    "initial_inside_extract": (
        "initial_load",
        lambda p: p.on_statement("etl.stage_accounts", "INSERT"),
    ),
    "incremental_before_pull": (
        "incremental_update",
        lambda p: p.at_step("etl.pull_change_window"),
    ),
    "incremental_inside_pull": (
        "incremental_update",
        lambda p: p.on_statement("etl.change_window", "INSERT"),
    ),
    "incremental_inside_pull_after_its_last_read": (
        "incremental_update",
        lambda p: p.on_statement("etl.run", "UPDATE"),
    ),
    "incremental_before_purge": ("incremental_update", lambda p: p.at_step("etl.purge_change_log")),
}
FAILED_STEP = {
    "initial_load": "etl.extract_source",
    "incremental_update": "etl.pull_change_window",
}


@pytest.mark.parametrize("recovery", ["retry_the_step", "next_run"])
@pytest.mark.parametrize("fault", SOURCE_FAULTS)
def test_the_source_refusing_connections_mid_run(loaded: Rig, fault: str, recovery: str) -> None:
    rig = loaded
    pipeline, place = SOURCE_FAULTS[fault]
    before = star_state(rig.olap)
    entry = "etl.run_initial_load" if pipeline == "initial_load" else "etl.run_incremental_update"
    pause = place(wc.PausePoint(rig.olap))
    try:
        pause.hold()
        run = wc.BackgroundCall(rig.olap, f"CALL {entry}(%s)", (BATCH,))
        pause.wait_until_paused(run)
        with source_refusing(rig.olap):
            if "inside" in fault:
                assert cut_source_connections(rig.oltp) == 1
            pause.release()
            outcome = run.join()
    finally:
        pause.close()

    failed_step = "etl.purge_change_log" if fault.endswith("purge") else FAILED_STEP[pipeline]
    assert isinstance(outcome, psycopg.OperationalError | psycopg.errors.FdwError), outcome
    run_id = wc.last_run(rig.olap)[0]
    errors = assert_failed_with_trace(rig.olap, run_id, failed_step, {"08001", "08006", "HV00N"})
    assert "connect" in errors[-1][2] or "connection" in errors[-1][2], errors
    if failed_step == "etl.purge_change_log":
        # The window was applied before the source went away: consistent and complete.
        assert wc.scalar(
            rig.olap, "SELECT window_applied FROM etl.run WHERE run_id = %s", (run_id,)
        )
        wc.assert_consistent(rig.olap)
    else:
        assert star_state(rig.olap) == before, "the failed step left a part of its work"

    if recovery == "retry_the_step":
        steps = INITIAL_STEPS if pipeline == "initial_load" else INCREMENTAL_STEPS
        call_steps(rig.olap, steps[steps.index(failed_step) :])
        assert wc.last_run(rig.olap)[:3] == (run_id, pipeline, "succeeded")
    else:
        dbtools.execute(rig.olap, f"CALL {entry}()")
    assert_ends_like_a_fresh_load(rig)


# --- b) timeouts inside a step ------------------------------------------------------------------


def test_a_lock_timeout_inside_a_step_fails_the_run_and_the_next_run_catches_up(
    loaded: Rig,
) -> None:
    """The ETL session sets lock_timeout; a DBA's transaction holds dim_account against
    writes. The run fails in dwh.load_dim_account, having committed the steps before."""
    rig = loaded
    before = star_state(rig.olap)
    with psycopg.connect(rig.olap) as locker:
        locker.execute("LOCK TABLE dwh.dim_account IN EXCLUSIVE MODE")
        with psycopg.connect(rig.olap, autocommit=True) as etl:
            etl.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable, match="lock timeout"):
                etl.execute("CALL etl.run_incremental_update(%s)", (BATCH,))
            run_id = wc.last_run(rig.olap)[0]
            # While the ETL session is still open, nothing is left held or running.
            assert_failed_with_trace(rig.olap, run_id, "dwh.load_dim_account", {"55P03"})
        locker.rollback()
    steps = dict(
        wc.fetch(
            rig.olap, "SELECT step, status FROM etl.loading_metadata WHERE run_id = %s", (run_id,)
        )
    )
    assert steps["etl.pull_change_window"] == steps["dwh.load_dim_date"] == "succeeded"
    assert star_state(rig.olap) == before
    assert not wc.scalar(
        rig.olap, "SELECT window_applied FROM etl.run WHERE run_id = %s", (run_id,)
    )

    wc.run_incremental(rig.olap, BATCH)
    next_run = wc.last_run(rig.olap)[0]
    assert wc.scalar(
        rig.olap, "SELECT changes_in_window FROM etl.run WHERE run_id = %s", (next_run,)
    ) == wc.scalar(rig.olap, "SELECT changes_in_window FROM etl.run WHERE run_id = %s", (run_id,))
    assert_ends_like_a_fresh_load(rig)


@pytest.mark.parametrize("pipeline", ["initial_load", "incremental_update"])
def test_a_statement_timeout_inside_a_step_is_logged_and_the_step_retried(
    loaded: Rig, pipeline: str
) -> None:
    """statement_timeout set with ALTER DATABASE cancels a step (SQLSTATE 57014) that waits
    on the monthly aggregate, which a long report holds. A cancel is no error PL/pgSQL's
    WHEN OTHERS catches: etl.run_step catches it too, or the step would stay 'running'
    and the session keep the pipeline lock. After the DBA's fix, Airflow's retry of the
    step resumes the run."""
    rig = loaded
    steps = INITIAL_STEPS if pipeline == "initial_load" else INCREMENTAL_STEPS
    failing = steps.index("dwh.load_fact_sales_monthly_aggregate")
    run_id = start_run(rig.olap, pipeline)
    call_steps(rig.olap, steps[:failing], run_id)
    before = star_state(rig.olap)
    with psycopg.connect(rig.olap) as report:
        report.execute("LOCK TABLE dwh.fact_sales_monthly_aggregate IN SHARE MODE")
        set_database_timeout(rig.olap, "1s")
        with psycopg.connect(rig.olap, autocommit=True) as task:
            with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
                task.execute(f"CALL {steps[failing]}(%s)", (run_id,))
            # The task's session is still open: the trace is written, the lock free.
            assert_failed_with_trace(rig.olap, run_id, steps[failing], {"57014"})
        report.rollback()
    set_database_timeout(rig.olap, None)
    # The aggregate's one transaction was rolled back; the steps before are intact.
    assert star_state(rig.olap) == before
    call_steps(rig.olap, steps[failing:])
    assert wc.last_run(rig.olap)[:3] == (run_id, pipeline, "succeeded")
    assert_ends_like_a_fresh_load(rig)


# --- c) killed processes ------------------------------------------------------------------------


def test_a_terminated_step_under_airflow_is_recorded_by_its_retry(loaded: Rig) -> None:
    """Steps called one by one (the DAG). The fact step's backend is terminated after its
    first batches: nothing could mark it. Airflow's retry of that task records the
    interruption (step failed, B2B02 in etl.error_log), resumes after the last committed
    batch, and the run ends as an uninterrupted one."""
    rig = loaded
    steps = INCREMENTAL_STEPS
    fact_step = steps.index("dwh.load_fact_sales_performance")
    run_id = start_run(rig.olap, "incremental_update")
    call_steps(rig.olap, steps[:fact_step], run_id)
    pause = wc.PausePoint(rig.olap).on_statement("dwh.fact_sales_performance", "INSERT", 2)
    try:
        pause.hold()
        task = wc.BackgroundCall(rig.olap, f"CALL {steps[fact_step]}(%s)", (run_id,))
        pause.kill(pause.wait_until_paused(task))
        assert isinstance(task.join(), psycopg.OperationalError)
    finally:
        pause.close()
    # Nobody alive could write the failure: the step looks executing, but nobody is.
    step_status, batches = wc.fetch(
        rig.olap,
        "SELECT status, batches FROM etl.loading_metadata WHERE run_id = %s AND step = %s",
        (run_id, steps[fact_step]),
    )[0]
    assert step_status == "running" and batches >= 1
    assert wc.scalar(rig.olap, "SELECT etl.pipeline_lock_holder()") is None
    health = status.status(rig.olap)
    assert any(
        p.startswith(f"the latest run {run_id} (incremental_update) was interrupted")
        for p in health.problems
    ), health.problems

    call_steps(rig.olap, steps[fact_step : fact_step + 1], run_id)  # the retry
    errors = wc.fetch(
        rig.olap,
        "SELECT procedure_name, sqlstate, message, detail FROM etl.error_log"
        " WHERE run_id = %s AND kind = 'error'",
        (run_id,),
    )
    assert len(errors) == 1, errors
    name, state, message, detail = errors[0]
    assert (name, state) == (steps[fact_step], "B2B02") and "interrupted" in message
    assert f"{batches} batches committed" in detail
    run_message = wc.scalar(rig.olap, "SELECT message FROM etl.run WHERE run_id = %s", (run_id,))
    assert run_message == f"resumed by {steps[fact_step]}"
    call_steps(rig.olap, steps[fact_step + 1 :], run_id)
    assert wc.last_run(rig.olap)[:3] == (run_id, "incremental_update", "succeeded")
    assert_ends_like_a_fresh_load(rig)


def test_a_terminated_one_call_run_gets_its_full_trace_from_the_next_run(loaded: Rig) -> None:
    """test_incremental_crash proves the data; here, the trace: the run the next one
    supersedes has its step failed and its error logged, not only its status."""
    rig = loaded
    pause = wc.PausePoint(rig.olap).on_statement("dwh.dim_product", "INSERT")
    try:
        pause.hold()
        run = wc.BackgroundCall(rig.olap, "CALL etl.run_incremental_update(%s)", (BATCH,))
        pause.kill(pause.wait_until_paused(run))
        run.join()
    finally:
        pause.close()
    killed = wc.last_run(rig.olap)[0]
    wc.run_incremental(rig.olap, BATCH)
    errors = assert_failed_with_trace(rig.olap, killed, "dwh.load_dim_product", {"B2B02"})
    assert len(errors) == 1
    message = wc.scalar(rig.olap, "SELECT message FROM etl.run WHERE run_id = %s", (killed,))
    assert message.endswith("(its step dwh.load_dim_product was left running)"), message
    assert_ends_like_a_fresh_load(rig)


CLIENT = """
import sys, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True, options=sys.argv[2])
conn.execute("CALL etl.run_incremental_update(%s)", (int(sys.argv[3]),))
"""


def wait_for(olap: str, query: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = wc.scalar(olap, query)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {query}")


@pytest.mark.parametrize("check_interval", [None, "100ms"])
def test_a_sigkilled_client_mid_call(loaded: Rig, check_interval: str | None) -> None:
    """The process that runs `CALL etl.run_incremental_update()` (psql, an Airflow worker)
    is SIGKILLed while the run is in its fact step. PostgreSQL does not stop a backend
    whose client is gone until it writes to it: by default the run goes on alone and
    succeeds. With client_connection_check_interval set (advised for the ETL role), the
    backend notices and exits in the middle of the step; the next run records the failure
    and ends as an uninterrupted run."""
    rig = loaded
    options = f"-c client_connection_check_interval={check_interval}" if check_interval else ""
    pause = wc.PausePoint(rig.olap).on_statement("dwh.fact_sales_performance", "INSERT", 2)
    try:
        pause.hold()
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, rig.olap, options, str(BATCH)],
            env=os.environ,
        )
        backend = pause.wait_until_paused()
        run_id = wc.last_run(rig.olap)[0]
        os.kill(client.pid, signal.SIGKILL)
        assert client.wait(30) == -signal.SIGKILL
        if check_interval:
            wait_for(rig.olap, f"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {backend}")
        pause.release()
    finally:
        pause.close()

    if check_interval is None:
        # The orphaned backend finishes the run, then finds its client gone.
        wait_for(rig.olap, f"SELECT status <> 'running' FROM etl.run WHERE run_id = {run_id}")
        assert wc.last_run(rig.olap)[:3] == (run_id, "incremental_update", "succeeded")
        wait_for(rig.olap, f"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {backend}")
        wc.run_incremental(rig.olap, BATCH)
        assert (
            wc.scalar(
                rig.olap, "SELECT changes_in_window FROM etl.run ORDER BY run_id DESC LIMIT 1"
            )
            == 0
        )
    else:
        assert wc.scalar(rig.olap, f"SELECT status FROM etl.run WHERE run_id = {run_id}") == (
            "running"
        )
        wc.run_incremental(rig.olap, BATCH)
        assert_failed_with_trace(rig.olap, run_id, "dwh.load_fact_sales_performance", {"B2B02"})
    assert_ends_like_a_fresh_load(rig)
