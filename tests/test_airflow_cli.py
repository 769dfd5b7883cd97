"""The README's set-up through the real `airflow` command line (issue 12, part 1), against
the standalone Airflow that `make airflow` starts (`b2bdwh airflow serve`, with a temporary
AIRFLOW_HOME, free ports and this module's databases), in a shell that ran
`eval "$(b2bdwh airflow env --airflow-home ...)"` as the README says.

One Airflow for the module; the scenarios run in order, on a fresh install:

1. Nothing done yet: both DAGs arrive unpaused; the incremental DAG's first scheduled run
   starts at once, before any initial load, and succeeds with its steps skipped.
   `airflow dags unpause` of both (a user unpausing "both at once") is harmless.
2. The original set-up: `airflow dags trigger dwh_initial_load`, then
   `airflow dags unpause dwh_incremental_update`: the initial load succeeds, a triggered
   incremental run applies the CRM's changes.
3. An initial load requested while an incremental run is between steps (opened from SQL as
   a DBA calling the steps would, and left there): its sensor waits; an incremental run
   triggered meanwhile skips; once the held run's last steps are called, the initial load
   starts and succeeds.

At the end: no DAG run failed (`airflow dags list-runs -o json`), nobody called
etl.abandon_run, every etl run succeeded, and the warehouse holds every source deal.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import conninfo

import dbtools
import warehouse_compare as wc
from airflow_server import SERVE, STARTUP_TIMEOUT, free_port, stop, wait_for
from b2bdwh.generate import generate
from b2bdwh.simulate import simulate

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
INITIAL, INCREMENTAL = "dwh_initial_load", "dwh_incremental_update"
RUN_TIMEOUT = 420  # seconds for one DAG run: a dozen task processes on two busy cores
CLI_TIMEOUT = 120

query, scalar, execute = dbtools.query, dbtools.scalar, dbtools.execute


@dataclass
class Airflow:
    home: Path
    server: subprocess.Popen
    env: dict[str, str]  # what the user's shell holds after the README's eval line
    transcript: list[str]

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """`airflow ARGV...` in the user's shell."""
        proc = subprocess.run(
            [str(BIN / "airflow"), *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        self.transcript.append(f"$ airflow {shlex.join(argv)}  # exit {proc.returncode}")
        self.transcript.append(proc.stdout.rstrip())
        if check:
            assert proc.returncode == 0, f"airflow {' '.join(argv)}: {proc.stderr[-3000:]}"
        return proc

    def json(self, *argv: str) -> Any:
        """The JSON that `airflow ARGV... -o json` prints on its last line (Airflow's own
        warnings may come before it on stdout)."""
        out = self.cli(*argv, "-o", "json").stdout
        return json.loads(out.rstrip().splitlines()[-1])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.json("dags", "list-runs", dag_id)

    def tasks(self, dag_id: str, run_id: str) -> dict[str, str]:
        tasks = self.json("tasks", "states-for-dag-run", dag_id, run_id)
        return {t["task_id"]: t["state"] for t in tasks}

    def wait(self, what: str, check: Callable[[], Any], timeout: float = RUN_TIMEOUT) -> Any:
        return wait_for(what, check, timeout, self.server)

    def finished_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            run = next(r for r in self.runs(dag_id) if r["run_id"] == run_id)
            return run if run["state"] in ("success", "failed") else None

        return self.wait(f"{dag_id} run {run_id} to finish", finished)

    def trigger(self, dag_id: str) -> str:
        before = {r["run_id"] for r in self.runs(dag_id)}
        self.cli("dags", "trigger", dag_id)
        (run_id,) = {r["run_id"] for r in self.runs(dag_id)} - before
        return run_id


def user_env(home: Path, warehouse: dbtools.Warehouse) -> dict[str, str]:
    """The environment of a shell that ran the README's `eval "$(b2bdwh airflow env)"`."""
    base = {
        **os.environ,
        "B2B_OLTP_DSN": warehouse.oltp_dsn,
        "B2B_OLAP_DSN": warehouse.olap_dsn,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    base.pop("AIRFLOW_CONFIG", None)
    script = f'eval "$(b2bdwh airflow env --airflow-home {shlex.quote(str(home))})" && env -0'
    out = subprocess.run(
        ["bash", "-c", script], env=base, capture_output=True, check=True, timeout=60
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def airflow(warehouse: dbtools.Warehouse, tmp_path_factory) -> Iterator[Airflow]:
    generate(warehouse.oltp_dsn, 0.05)
    home = tmp_path_factory.mktemp("airflow_home")
    port = free_port()
    env = {
        **os.environ,
        "B2B_OLTP_DSN": warehouse.oltp_dsn,
        "B2B_OLAP_DSN": warehouse.olap_dsn,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    with open(home / "serve.out", "w") as out:
        server = subprocess.Popen(
            [*SERVE, "--airflow-home", str(home), "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    transcript: list[str] = []
    try:

        def healthy() -> bool:
            health = httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=30)
            return health.status_code == 200 and all(
                part["status"] == "healthy" for part in health.json().values()
            )

        wait_for("every component healthy", healthy, STARTUP_TIMEOUT, server)
        yield Airflow(home, server, user_env(home, warehouse), transcript)
    except BaseException:
        print((home / "serve.out").read_text()[-5000:])
        raise
    finally:
        stop(server)
        print("\n".join(transcript))


def test_the_connections_come_from_the_settings(airflow, warehouse):
    """`airflow connections add b2b_sales ...` answers "already exists": the README says
    why (the settings define them) and how to point them elsewhere."""
    conn = airflow.json("connections", "get", "b2b_sales_olap")
    assert conn[0]["schema"] == conninfo.conninfo_to_dict(warehouse.olap_dsn)["dbname"]
    assert conn[0]["login"] == "b2b_etl"
    added = airflow.cli(
        "connections", "add", "b2b_sales", "--conn-uri", "postgres://x@elsewhere/db", check=False
    )
    assert "already exists" in added.stdout + added.stderr


def test_1_before_any_initial_load_the_incremental_dag_runs_and_skips(airflow, warehouse):
    def first_incremental() -> dict[str, Any] | None:
        runs = airflow.runs(INCREMENTAL)
        return runs[0] if runs and runs[0]["state"] in ("success", "failed") else None

    run = airflow.wait("the incremental DAG's first scheduled run", first_incremental)
    assert run["run_id"].startswith("scheduled__"), "unpaused on arrival: nobody triggered it"
    assert run["state"] == "success"
    tasks = airflow.tasks(INCREMENTAL, run["run_id"])
    assert tasks.pop("etl.start_run") == "success"
    assert tasks.pop("run_started") == "success"
    assert tasks.pop("no_run_started") == "success"
    assert set(tasks) == set(wc.INCREMENTAL_STEPS) and set(tasks.values()) == {"skipped"}
    assert query(warehouse.olap_dsn, "SELECT * FROM etl.run") == [], "no run started"
    # "Unpause both at once": nothing to do, and no error.
    airflow.cli("dags", "unpause", INCREMENTAL)
    airflow.cli("dags", "unpause", INITIAL)


def test_2_the_original_set_up_trigger_the_initial_load_then_unpause(airflow, warehouse):
    run_id = airflow.trigger(INITIAL)
    airflow.cli("dags", "unpause", INCREMENTAL)
    assert airflow.finished_run(INITIAL, run_id)["state"] == "success"
    assert query(warehouse.olap_dsn, "SELECT pipeline, status FROM etl.run") == [
        ("initial_load", "succeeded")
    ]
    # The CRM goes on; the next incremental run (triggered here rather than waiting 15 min
    # for the schedule) applies its changes.
    simulate(warehouse.oltp_dsn, 50, seed=12)
    run_id = airflow.trigger(INCREMENTAL)
    assert airflow.finished_run(INCREMENTAL, run_id)["state"] == "success"
    tasks = airflow.tasks(INCREMENTAL, run_id)
    assert tasks.pop("no_run_started") == "skipped"
    assert set(tasks.values()) == {"success"}
    assert query(
        warehouse.olap_dsn,
        "SELECT pipeline, status, window_applied FROM etl.run ORDER BY run_id DESC LIMIT 1",
    ) == [("incremental_update", "succeeded", True)]


def test_3_an_initial_load_requested_while_an_incremental_run_is_between_steps_waits(
    airflow, warehouse
):
    olap = warehouse.olap_dsn
    simulate(warehouse.oltp_dsn, 30, seed=13)
    # An incremental run between steps, as a DBA calling the steps by hand leaves it.
    with psycopg.connect(olap, autocommit=True) as conn:
        (held,) = conn.execute("CALL etl.start_run('incremental_update')").fetchone()
    execute(olap, "CALL etl.pull_change_window(%s)", (held,))

    initial = airflow.trigger(INITIAL)
    airflow.wait(
        "the initial load's sensor to wait",
        lambda: airflow.tasks(INITIAL, initial).get("etl.pipeline_idle") == "up_for_reschedule",
    )
    # Meanwhile the incremental DAG's next run stands aside: success, steps skipped.
    incremental = airflow.trigger(INCREMENTAL)
    assert airflow.finished_run(INCREMENTAL, incremental)["state"] == "success"
    assert airflow.tasks(INCREMENTAL, incremental)["no_run_started"] == "success"
    assert airflow.tasks(INITIAL, initial)["etl.start_run"] in (None, "none", "")
    assert scalar(olap, "SELECT max(run_id) FROM etl.run") == held, "nothing else started"

    # The held run goes on to its end; then the initial load starts by itself.
    for step in wc.INCREMENTAL_STEPS[1:]:
        execute(olap, f"CALL {step}(%s)", (held,))
    assert airflow.finished_run(INITIAL, initial)["state"] == "success"
    assert query(olap, "SELECT status FROM etl.run WHERE run_id = %s", (held,)) == [("succeeded",)]
    assert query(olap, "SELECT pipeline, status FROM etl.run WHERE run_id > %s", (held,)) == [
        ("initial_load", "succeeded")
    ]


def test_no_dag_run_failed_and_the_warehouse_is_loaded_and_current(airflow, warehouse):
    for dag_id in (INITIAL, INCREMENTAL):
        states = [r["state"] for r in airflow.runs(dag_id)]
        assert states and set(states) == {"success"}, (dag_id, states)
    olap = warehouse.olap_dsn
    assert query(olap, "SELECT DISTINCT status FROM etl.run") == [("succeeded",)]
    assert scalar(olap, "SELECT count(*) FROM etl.run WHERE message LIKE 'abandoned%%'") == 0
    deals = scalar(warehouse.oltp_dsn, "SELECT count(*) FROM sales_pipeline")
    facts = scalar(olap, "SELECT count(*) FROM dwh.fact_sales_performance WHERE NOT is_deleted")
    assert facts == deals
