"""`b2bdwh status` as a health check: exit 0 on a healthy warehouse with every section shown,
2 with the reason when there is no run, the latest run failed, the lag is beyond --max-lag
or etl.config max_freshness_lag, the database cannot be reached, or the latest Airflow run of
a DAG failed before reaching the database; 1 only for a usage error."""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import dbtools
from b2bdwh import status
from b2bdwh.db import CliError
from b2bdwh.generate import generate

SECTIONS = [
    "Recent runs (last 3 of each pipeline):",
    "Steps of run ",
    "Lag behind the source:",
    "Change consumer (this warehouse in the source's cdc.consumer):",
    "Failed validations of these runs:",
    "Recent errors (etl.error_log, last 10):",
    "Quarantined rows: ",
]


call = dbtools.execute


def run_status(
    warehouse: dbtools.Warehouse,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
) -> tuple[int, str]:
    """`b2bdwh status ARGV` against this warehouse: (exit code, output)."""
    monkeypatch.setenv("B2B_OLAP_DSN", warehouse.olap_dsn)
    monkeypatch.setenv("AIRFLOW_HOME", "")  # no Airflow here: a user's .airflow must not count
    parser = argparse.ArgumentParser()
    status.add_arguments(parser)
    code = status.run(parser.parse_args(list(argv)))
    return code, capsys.readouterr().out


def change_the_source(warehouse: dbtools.Warehouse) -> None:
    call(
        warehouse.oltp_dsn,
        "UPDATE accounts SET employees = coalesce(employees, 0) + 1"
        " WHERE account_id = (SELECT min(account_id) FROM accounts)",
    )


def test_a_warehouse_never_loaded_is_unhealthy(warehouse, monkeypatch, capsys):
    code, out = run_status(warehouse, monkeypatch, capsys)
    assert code == status.UNHEALTHY
    assert "no run yet" in out


@pytest.fixture(scope="module")
def loaded(warehouse: dbtools.Warehouse) -> dbtools.Warehouse:
    generate(warehouse.oltp_dsn, 0.2)
    call(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    return warehouse


def test_a_healthy_warehouse_exits_0_and_shows_every_section(loaded, monkeypatch, capsys):
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == 0, out
    for section in SECTIONS:
        assert section in out
    assert "initial_load  succeeded" in out
    assert "dwh.load_fact_sales_performance" in out
    assert "none: every committed source change is applied" in out
    assert f"  name: {loaded.olap_name}" in out
    assert "  purge: held back for the changes it has not applied" in out
    assert out.rstrip().endswith("Healthy (max lag 30m 00s).")


def test_a_lag_beyond_max_lag_exits_2(loaded, monkeypatch, capsys):
    change_the_source(loaded)
    code, out = run_status(loaded, monkeypatch, capsys, "--max-lag", "0")
    assert code == status.UNHEALTHY
    assert "1 source change(s) not applied yet" in out
    assert "UNHEALTHY:" in out and "exceeds --max-lag 0.0 s (1 change(s) waiting)" in out
    # The same fresh change is well within the default 30 minutes, or an interval.
    assert run_status(loaded, monkeypatch, capsys)[0] == 0
    assert run_status(loaded, monkeypatch, capsys, "--max-lag", "15 minutes")[0] == 0
    # Applied, it is no longer a lag.
    call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    code, out = run_status(loaded, monkeypatch, capsys, "--max-lag", "0")
    assert code == 0, out
    assert "incremental_update  succeeded" in out


def test_a_bad_max_lag_is_a_clear_error(loaded, monkeypatch, capsys):
    with pytest.raises(CliError, match="--max-lag 'soon'"):
        run_status(loaded, monkeypatch, capsys, "--max-lag", "soon")


def test_a_failed_run_exits_2_naming_it(loaded, monkeypatch, capsys):
    change_the_source(loaded)
    call(loaded.olap_dsn, "UPDATE etl.config SET value = 'x' WHERE key = 'date_margin_days'")
    try:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    finally:
        call(loaded.olap_dsn, "UPDATE etl.config SET value = '366' WHERE key = 'date_margin_days'")
    run_id = dbtools.scalar(loaded.olap_dsn, "SELECT max(run_id) FROM etl.run")
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == status.UNHEALTHY
    assert f"the latest run {run_id} (incremental_update) failed: dwh.load_dim_date failed" in out
    assert f"Steps of run {run_id} (incremental_update, failed):" in out
    assert "22P02" in out  # the error, in the recent errors
    # The next successful run makes it healthy again.
    call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == 0, out


def test_a_failed_validation_is_listed(loaded, monkeypatch, capsys):
    run_id = dbtools.scalar(loaded.olap_dsn, "SELECT max(run_id) FROM etl.run")
    call(
        loaded.olap_dsn,
        "INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual)"
        f" VALUES ({run_id}, 'a check made to fail', false, '0', '7')",
    )
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == 0  # the run itself succeeded: a listed check, not a health failure
    assert "a check made to fail" in out


def test_a_replaced_source_is_unhealthy_until_an_initial_load(loaded, monkeypatch, capsys):
    """generate / import-csv replace the source (TRUNCATE, then load): an incremental update
    cannot apply that, so the health check says so before any run fails, with the way out."""
    generate(loaded.oltp_dsn, 0.2, seed=7)
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == status.UNHEALTHY
    assert "the source was replaced" in out and "CALL etl.run_initial_load();" in out
    call(loaded.olap_dsn, "CALL etl.run_initial_load()")
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == 0, out


def test_a_warehouse_the_source_does_not_know_is_unhealthy_until_it_reports(
    loaded, monkeypatch, capsys
):
    """Its row gone from cdc.consumer (a DBA cleaned up, or a copy never registered), the
    source would purge what it has not applied: unhealthy, with the way out; its next
    incremental update registers it again."""
    call(loaded.oltp_dsn, "DELETE FROM cdc.consumer")
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == status.UNHEALTHY
    assert "  position: not registered" in out
    assert f"consumer {loaded.olap_name} is not registered with the source" in out
    assert "CALL etl.run_incremental_update(); now" in out
    call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    code, out = run_status(loaded, monkeypatch, capsys)
    assert code == 0, out


# --- through the real command line, as a monitor runs it ----------------------------------

DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "dwh_incremental_update.py"


def b2bdwh(
    warehouse: dbtools.Warehouse, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`b2bdwh ARGS` in a child process against this warehouse (env overrides the settings)."""
    # AIRFLOW_HOME set empty: no Airflow unless the test gives one.
    environ = {**os.environ, "B2B_OLAP_DSN": warehouse.olap_dsn, "AIRFLOW_HOME": "", **env}
    return subprocess.run(
        [sys.executable, "-m", "b2bdwh", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def dag_interval() -> dt.timedelta:
    """INTERVAL as dags/dwh_incremental_update.py sets it (read, not imported)."""
    for node in ast.parse(DAG_FILE.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INTERVAL":
            call = node.value
            assert isinstance(call, ast.Call) and call.func.id == "timedelta"
            return dt.timedelta(**{k.arg: ast.literal_eval(k.value) for k in call.keywords})
    raise AssertionError("no INTERVAL in the DAG file")


def test_the_freshness_threshold_defaults_to_twice_the_dag_interval(loaded):
    (max_lag,) = dbtools.query(
        loaded.olap_dsn, "SELECT value::interval FROM etl.config WHERE key = 'max_freshness_lag'"
    )[0]
    assert max_lag == 2 * dag_interval()


def test_the_freshness_view_and_status_share_the_config_threshold(loaded):
    """etl.v_freshness is what status reads: a source change waits, so the lag grows; past
    etl.config max_freshness_lag the view says stale and status exits 2 naming the setting;
    --max-lag overrides it; applied, the lag is zero again."""
    call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    change_the_source(loaded)
    call(loaded.oltp_dsn, "SELECT pg_sleep(0.2)")
    view = "SELECT unapplied_changes, lag > interval '0', is_fresh FROM etl.v_freshness"
    assert dbtools.query(loaded.olap_dsn, view) == [(1, True, True)]
    assert b2bdwh(loaded, "status").returncode == 0
    call(loaded.olap_dsn, "UPDATE etl.config SET value = '0.1 s' WHERE key = 'max_freshness_lag'")
    try:
        assert dbtools.query(loaded.olap_dsn, view) == [(1, True, False)]
        proc = b2bdwh(loaded, "status")
        assert proc.returncode == status.UNHEALTHY, proc.stdout + proc.stderr
        assert "exceeds etl.config max_freshness_lag 0.1 s (1 change(s) waiting)" in proc.stdout
        assert b2bdwh(loaded, "status", "--max-lag", "1 hour").returncode == 0
    finally:
        call(
            loaded.olap_dsn,
            "UPDATE etl.config SET value = '30 minutes' WHERE key = 'max_freshness_lag'",
        )
    call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    assert dbtools.query(loaded.olap_dsn, view) == [(0, False, True)]


def test_an_unreachable_database_exits_2_and_a_usage_error_1(loaded, tmp_path):
    down = b2bdwh(loaded, "status", B2B_OLAP_DSN=f"host={tmp_path} port=1 dbname=nowhere")
    assert down.returncode == status.UNHEALTHY, down.stderr
    assert down.stderr.startswith("b2bdwh status: UNHEALTHY: cannot connect to database nowhere")
    assert "Traceback" not in down.stderr
    gone = b2bdwh(loaded, "status", B2B_OLAP_DSN=f"{loaded.olap_dsn} user=no_such_role")
    assert gone.returncode == status.UNHEALTHY, gone.stderr
    for usage in (["--no-such-option"], ["--runs", "many"], ["--max-lag", "soon"]):
        proc = b2bdwh(loaded, "status", *usage)
        assert proc.returncode == 1, (usage, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
    help_text = " ".join(b2bdwh(loaded, "status", "--help").stdout.split())
    assert "0 healthy; 2 unhealthy (including a database that cannot be reached)" in help_text
    assert "1 only for a usage error" in help_text


def test_a_dag_run_refused_by_the_database_makes_status_unhealthy(loaded, tmp_path):
    """A DAG run whose etl.start_run cannot connect (the warehouse refuses it) leaves no trace
    in the warehouse: status reads Airflow's own record of it, exits 2 naming the DAG run,
    until a run of that pipeline succeeds."""
    call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    home = tmp_path / "airflow"
    refused = b2bdwh(
        loaded,
        "airflow",
        "test",
        "dwh_incremental_update",
        "--airflow-home",
        str(home),
        B2B_OLAP_DSN=f"host={tmp_path} port=1 dbname={loaded.olap_name}",
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "task etl.start_run failed" in refused.stderr
    # Without Airflow's record the warehouse looks healthy: the run never reached it.
    assert b2bdwh(loaded, "status", "--airflow-home", "").returncode == 0
    proc = b2bdwh(loaded, "status", AIRFLOW_HOME=str(home))
    assert proc.returncode == status.UNHEALTHY, proc.stdout + proc.stderr
    assert "the latest Airflow run of dwh_incremental_update (manual__" in proc.stdout
    assert "failed, and no incremental_update run succeeded since" in proc.stdout
    call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    proc = b2bdwh(loaded, "status", "--airflow-home", str(home))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "  dwh_incremental_update: failed, run manual__" in proc.stdout
