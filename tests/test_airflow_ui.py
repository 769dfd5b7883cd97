"""`make airflow`: the Airflow UI, served by `b2bdwh airflow serve` (the command the Makefile
runs), started here with a temporary AIRFLOW_HOME and free ports so that it cannot meet a
user's own instance, and with the connections pointing at this module's databases.

Through the REST API that the UI itself uses: every component is healthy, the admin logs in
with the password Airflow generated into AIRFLOW_HOME, the four DAGs are listed with their
doc_md and no import errors, both connections are stored, and dwh_initial_load triggered from
the API runs to success through the scheduler (which proves the connections and the
task processes' way back to this server). Every process started is stopped, as a process
group, whatever happens.
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import conninfo

import dbtools
from airflow_server import SERVE, STARTUP_TIMEOUT, free_port, stop, wait_for
from b2bdwh import airflow_run
from b2bdwh.generate import generate

pytestmark = pytest.mark.slow

DAG_IDS = ("dwh_initial_load", "dwh_incremental_update", "dwh_horizon_move")
# The CRM's archiving, on the source (tags without "dwh").
SOURCE_DAG_IDS = ("crm_archive_closed_deals",)
RUN_TIMEOUT = 300


@dataclass
class Ui:
    url: str
    home: Path
    api: httpx.Client  # logged in as admin
    seconds_to_healthy: float
    server: subprocess.Popen

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        return wait_for(what, check, timeout, self.server)

    def write(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A write through the API, tried again (twice) when Airflow answers 500 "Database
        error": its four components share one SQLite file, which takes one writer at a time,
        and a write that waits more than 5 s fails (seen in CI: unpausing a DAG while a task
        started). A user clicks again; so does this."""
        for _ in range(2):
            response = self.api.request(method, path, **kwargs)
            if response.status_code != 500 or "Database error" not in response.text:
                return response
            time.sleep(2)
        return self.api.request(method, path, **kwargs)

    def ok(self, response: httpx.Response) -> Any:
        """The JSON of a successful response; for any other, a failure that carries the
        server's log (where Airflow writes the traceback of a 500)."""
        if not response.is_success:
            log = (self.home / "serve.out").read_text()[-8000:]
            pytest.fail(
                f"{response.request.method} {response.url}: {response.status_code} "
                f"{response.text}\n--- serve.out ---\n{log}"
            )
        return response.json()


@pytest.fixture(scope="module")
def ui(warehouse: dbtools.Warehouse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    generate(warehouse.oltp_dsn, 0.05)
    home = tmp_path_factory.mktemp("airflow_home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "B2B_OLTP_DSN": warehouse.oltp_dsn,
        "B2B_OLAP_DSN": warehouse.olap_dsn,
        # The log servers of the scheduler and the triggerer have fixed default ports too.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    # What `make airflow` runs, with this module's AIRFLOW_HOME and port.
    serve_args = ["--airflow-home", str(home), "--port", str(port)]
    started = time.monotonic()
    with open(home / "serve.out", "w") as out:
        server = subprocess.Popen(
            [*SERVE, *serve_args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=url, timeout=30) as api:

            def healthy() -> bool:
                health = api.get("/api/v2/monitor/health")
                return health.status_code == 200 and all(
                    part["status"] == "healthy" for part in health.json().values()
                )

            wait_for("every component healthy", healthy, STARTUP_TIMEOUT, server)
            seconds = time.monotonic() - started
            password = json.loads((home / airflow_run.PASSWORDS_FILE).read_text())["admin"]
            token = api.post("/auth/token", json={"username": "admin", "password": password})
            assert token.is_success, token.text
            api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            yield Ui(url, home, api, seconds, server)
    except BaseException:
        print((home / "serve.out").read_text()[-5000:])
        raise
    finally:
        stop(server)


def test_make_airflow_runs_the_command_tested_here():
    recipe = subprocess.run(
        ["make", "-n", "airflow"],
        cwd=airflow_run.settings.PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"b2bdwh airflow serve --port {airflow_run.DEFAULT_PORT}" in recipe


def test_serve_refuses_a_port_in_use_before_starting_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*SERVE, "--airflow-home", str(tmp_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 1
    assert f"port {port} is taken" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def listening_sockets(pgid: int) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket listening in a process group (`ss -ltnp`)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            try:
                if os.getpgid(pid) == pgid:
                    found.append((address, int(port), pid))
            except ProcessLookupError:
                pass
    return found


def test_every_component_listens_on_127_0_0_1_only(ui):
    """The README's promise: the UI on 127.0.0.1, and no log server on every interface (the
    scheduler's and triggerer's, 8793/8794 by default, are not started: Airflow offers no
    host setting for them)."""
    port = int(ui.url.rsplit(":", 1)[1])
    sockets = ui.wait_for(
        "the triggerer running",
        lambda: listening_sockets(ui.server.pid) if triggerer_running(ui.server.pid) else None,
        STARTUP_TIMEOUT,
    )
    assert sockets, "nothing listens in the server's process group"
    assert {(address, p) for address, p, _pid in sockets} == {("127.0.0.1", port)}, sockets


def triggerer_running(pgid: int) -> bool:
    out = subprocess.run(["ps", "-o", "args=", "-g", str(pgid)], capture_output=True, text=True)
    return "airflow triggerer" in out.stdout


def test_the_ui_page_is_served(ui):
    print(f"every component healthy {ui.seconds_to_healthy:.0f}s after the start")
    page = httpx.get(ui.url + "/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


def test_the_api_refuses_a_wrong_password_and_no_token(ui):
    wrong = httpx.post(
        ui.url + "/auth/token", json={"username": "admin", "password": "nope"}, timeout=30
    )
    assert wrong.status_code == 401
    assert httpx.get(ui.url + "/api/v2/dags", timeout=30).status_code == 401


def listed_dags(ui: Ui) -> dict[str, dict]:
    dags = ui.api.get("/api/v2/dags").raise_for_status().json()["dags"]
    return {dag["dag_id"]: dag for dag in dags}


def test_the_dags_are_listed_without_import_errors(ui):
    dags = ui.wait_for(
        "the DAG processor to list the DAGs",
        lambda: (found := listed_dags(ui)).keys() >= {*DAG_IDS, *SOURCE_DAG_IDS} and found,
        120,
    )
    assert sorted(dags) == sorted([*DAG_IDS, *SOURCE_DAG_IDS]), "dags/ holds four DAGs, no examples"
    for dag_id in DAG_IDS:
        assert not dags[dag_id]["has_import_errors"], dag_id
        assert {"b2b_sales", "dwh"} <= {tag["name"] for tag in dags[dag_id]["tags"]}
    errors = ui.api.get("/api/v2/importErrors").raise_for_status().json()
    assert errors["total_entries"] == 0, errors["import_errors"]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_each_dag_serves_its_doc_md(ui, dag_id):
    ui.wait_for(f"{dag_id} to be listed", lambda: dag_id in listed_dags(ui), 120)
    details = ui.api.get(f"/api/v2/dags/{dag_id}/details").raise_for_status().json()
    source = (airflow_run.DAGS_FOLDER / f"{dag_id}.py").read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    assert docstring and f"### {dag_id}" in docstring
    assert details["doc_md"] == docstring.strip()  # Airflow strips it when serialising


@pytest.mark.parametrize("conn_id", ["b2b_sales", "b2b_sales_olap"])
def test_the_connections_are_stored_from_the_settings(ui, warehouse, conn_id):
    dsn = {"b2b_sales": warehouse.oltp_dsn, "b2b_sales_olap": warehouse.olap_dsn}[conn_id]
    params = conninfo.conninfo_to_dict(dsn)
    conn = ui.api.get(f"/api/v2/connections/{conn_id}").raise_for_status().json()
    assert conn["conn_type"] == "postgres"
    assert conn["schema"] == params["dbname"]
    assert conn["host"] == (params.get("host") or os.environ["PGHOST"])
    assert str(conn["port"]) == str(params.get("port") or os.environ["PGPORT"])
    # The pipeline runs as the ETL role; the source connection keeps the settings' user.
    source_user = params.get("user") or os.environ["PGUSER"]
    assert conn["login"] == ("b2b_etl" if conn_id == "b2b_sales_olap" else source_user)


def test_the_metadata_database_is_in_write_ahead_log_mode(ui):
    with sqlite3.connect(ui.home / "airflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_run_triggered_through_the_api_loads_the_warehouse(ui, warehouse):
    dag = "/api/v2/dags/dwh_initial_load"
    ui.wait_for("dwh_initial_load to be listed", lambda: "dwh_initial_load" in listed_dags(ui), 120)
    ui.ok(ui.write("PATCH", dag, json={"is_paused": False}))
    run = ui.ok(ui.write("POST", f"{dag}/dagRuns", json={"logical_date": None, "conf": {}}))
    run_id = run["dag_run_id"]

    def finished() -> str | None:
        state = ui.ok(ui.api.get(f"{dag}/dagRuns/{run_id}"))["state"]
        return state if state in ("success", "failed") else None

    state = ui.wait_for("the DAG run to finish", finished, RUN_TIMEOUT)
    tasks = ui.ok(ui.api.get(f"{dag}/dagRuns/{run_id}/taskInstances"))
    states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
    assert state == "success", states
    assert set(states.values()) == {"success"}
    assert dbtools.query(warehouse.olap_dsn, "SELECT pipeline, status FROM etl.run") == [
        ("initial_load", "succeeded")
    ]
    facts = dbtools.scalar(warehouse.olap_dsn, "SELECT count(*) FROM dwh.fact_sales_performance")
    assert facts == dbtools.scalar(warehouse.oltp_dsn, "SELECT count(*) FROM sales_pipeline")
