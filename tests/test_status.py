"""`b2bdwh status` as a health check: exit 0 on a healthy warehouse with every section shown,
2 with the reason when there is no run, the latest run failed, or the lag is beyond --max-lag."""

from __future__ import annotations

import argparse

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
    assert out.rstrip().endswith("Healthy (max lag 1h 00m 00s).")


def test_a_lag_beyond_max_lag_exits_2(loaded, monkeypatch, capsys):
    change_the_source(loaded)
    code, out = run_status(loaded, monkeypatch, capsys, "--max-lag", "0")
    assert code == status.UNHEALTHY
    assert "1 source change(s) not applied yet" in out
    assert "UNHEALTHY:" in out and "exceeds --max-lag 0.0 s (1 change(s) waiting)" in out
    # The same fresh change is well within the default hour, or an interval.
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
