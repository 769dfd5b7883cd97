"""dwh_initial_load end to end through a real Airflow, against a fresh source and warehouse.

`b2bdwh airflow test` runs the DAG with Airflow's dag.test() in a child process
(a throwaway SQLite metadata database, the dags/ folder, the connections built
from B2B_OLTP_DSN/B2B_OLAP_DSN); the warehouse is then checked against the
SOURCE tables directly, not against the staging copy the procedures validate.
The source is generated, then given a few rows a real CRM would hold that the
warehouse must quarantine. A failing run uses a realistic, reversible fault: a
mistyped setting in etl.config.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import airflow_run
from b2bdwh.db import CliError
from b2bdwh.generate import generate

pytestmark = pytest.mark.slow

SCALE = 0.2
BATCH_SIZE = 500  # several fact batches at this scale
TASKS = ["etl.pipeline_idle", "etl.start_run", *wc.INITIAL_STEPS]
# Source rows the warehouse must quarantine (a close value no column holds), by opportunity.
# (An unknown stage or a date outside the calendar is loaded on the Unknown member.)
DIRTY = {
    "close value not a number": "SET close_value = 'NaN'",
    "close value beyond numeric(18, 2)": "SET close_value = 1e17",
}


query, execute = dbtools.query, dbtools.execute


@pytest.fixture(scope="module")
def source(warehouse: dbtools.Warehouse) -> dbtools.Warehouse:
    """The fresh pair, with a generated source holding a few rows to quarantine."""
    generate(warehouse.oltp_dsn, SCALE)
    ids = [
        r[0]
        for r in query(
            warehouse.oltp_dsn,
            "SELECT opportunity_id FROM sales_pipeline ORDER BY opportunity_id LIMIT %s",
            (len(DIRTY),),
        )
    ]
    for opportunity_id, change in zip(ids, DIRTY.values(), strict=True):
        execute(
            warehouse.oltp_dsn,
            f"UPDATE sales_pipeline {change} WHERE opportunity_id = %s",
            (opportunity_id,),
        )
    return warehouse


def b2bdwh_airflow(warehouse: dbtools.Warehouse, *argv: str) -> tuple[int, str, str]:
    """`b2bdwh airflow ARGV...` as the command line runs it, with the settings pointing at
    `warehouse`: (exit code, what it printed, its error message)."""
    parser = argparse.ArgumentParser(prog="b2bdwh airflow")
    airflow_run.add_arguments(parser)
    args = parser.parse_args(argv)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("B2B_OLTP_DSN", warehouse.oltp_dsn)
        mp.setenv("B2B_OLAP_DSN", warehouse.olap_dsn)
        try:
            code, error = airflow_run.run(args), ""
        except CliError as exc:
            code, error = 1, str(exc)
    return code, out.getvalue(), error


@pytest.fixture(scope="module")
def first_run(source, tmp_path_factory) -> tuple[int, str, str, int]:
    """The DAG run once on the fresh warehouse: exit code, output, error, its etl run id."""
    home = tmp_path_factory.mktemp("airflow")
    conf = json.dumps({"batch_size": BATCH_SIZE})
    code, out, error = b2bdwh_airflow(
        source, "test", "dwh_initial_load", "--conf", conf, "--airflow-home", str(home)
    )
    runs = query(source.olap_dsn, "SELECT run_id FROM etl.run")
    return code, out, error, runs[0][0] if len(runs) == 1 else -1


# --- a successful run -------------------------------------------------------------------------


def test_the_dag_run_succeeds_and_prints_each_task(first_run):
    code, out, error, _run_id = first_run
    assert (code, error) == (0, ""), out
    lines = out.splitlines()
    assert lines[0].startswith("dwh_initial_load: running through Airflow, metadata database in")
    assert lines[1].startswith("Airflow 3.") and " set up in " in lines[1]
    task_lines = [line.split() for line in lines[2:-1]]
    assert [(t[0], t[1]) for t in task_lines] == [(task, "success") for task in TASKS]
    assert all(t[2].endswith("s") for t in task_lines), "each task shows its duration"
    assert lines[-1].startswith("dwh_initial_load: run manual__") and " success in " in lines[-1]


def test_the_etl_run_succeeded_with_the_batch_size_param(source, first_run):
    _code, _out, _error, run_id = first_run
    assert run_id > 0, "exactly one etl run"
    [(pipeline, status, batch_size, message, started_by)] = query(
        source.olap_dsn,
        "SELECT pipeline, status, batch_size, message, started_by FROM etl.run WHERE run_id = %s",
        (run_id,),
    )
    # The DAG connects as the ETL role, which may execute the pipeline and nothing else.
    assert (pipeline, status, batch_size, message, started_by) == (
        "initial_load",
        "succeeded",
        BATCH_SIZE,
        None,
        "b2b_etl",
    )


def test_every_step_task_wrote_its_loading_metadata(source, first_run):
    *_, run_id = first_run
    rows = query(
        source.olap_dsn,
        "SELECT step, status, finished_at IS NOT NULL, batches FROM etl.loading_metadata"
        " WHERE run_id = %s ORDER BY loading_metadata_id",
        (run_id,),
    )
    # The sensor reads; etl.start_run writes etl.run itself; every other task is a step
    # with its row.
    assert [r[0] for r in rows] == TASKS[2:]
    assert all(status == "succeeded" and finished for _, status, finished, _ in rows)
    facts = dict((r[0], r[3]) for r in rows)["dwh.load_fact_sales_performance"]
    assert facts > 1, "the batch size param made the fact load work in batches"


def test_every_validation_passed(source, first_run):
    *_, run_id = first_run
    checks = query(
        source.olap_dsn,
        "SELECT check_name, passed FROM etl.validation_result WHERE run_id = %s",
        (run_id,),
    )
    assert len(checks) >= 5
    assert [name for name, passed in checks if not passed] == []


def quarantined(dsn: str, run_id: int) -> dict[str, str]:
    return dict(
        query(
            dsn,
            "SELECT business_key, message FROM etl.error_log WHERE run_id = %s"
            " AND kind = 'quarantine' AND table_name = 'sales_pipeline'",
            (run_id,),
        )
    )


def test_dirty_source_rows_are_quarantined_not_loaded(source, first_run):
    *_, run_id = first_run
    assert len(quarantined(source.olap_dsn, run_id)) == len(DIRTY)


def test_facts_reconcile_with_the_source_per_deal_stage(source, first_run):
    *_, run_id = first_run
    excluded = list(quarantined(source.olap_dsn, run_id))
    in_source = query(
        source.oltp_dsn,
        "SELECT deal_stage, count(*), coalesce(sum(close_value), 0) FROM sales_pipeline"
        " WHERE opportunity_id <> ALL(%s) GROUP BY deal_stage",
        (excluded,),
    )
    in_facts = query(
        source.olap_dsn,
        "SELECT s.deal_stage_name, count(*), coalesce(sum(f.close_value), 0)"
        "  FROM dwh.fact_sales_performance AS f JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)"
        " WHERE NOT f.is_deleted GROUP BY s.deal_stage_name",
    )
    expected = {stage: (n, Decimal(v)) for stage, n, v in in_source}
    assert {stage: (n, Decimal(v)) for stage, n, v in in_facts} == expected
    assert set(expected) == {"Prospecting", "Engaging", "Won", "Lost"}


def test_dimensions_hold_exactly_the_source_entities(source, first_run):
    counts = {
        table: query(source.oltp_dsn, f"SELECT count(*) FROM {table}")[0][0]
        for table in ("accounts", "sales_agents", "products")
    }
    assert counts["accounts"] > 0
    dims = query(
        source.olap_dsn,
        """SELECT (SELECT count(*) FROM dwh.dim_account WHERE account_key <> -1),
                  (SELECT count(*) FROM dwh.dim_sales_agent WHERE sales_agent_key <> -1),
                  (SELECT count(*) FROM dwh.dim_product WHERE product_key <> -1 AND is_current)""",
    )[0]
    assert dims == (counts["accounts"], counts["sales_agents"], counts["products"])


# --- a failing run ----------------------------------------------------------------------------


def test_a_failing_step_fails_the_dag_run_and_the_etl_run(source, first_run, tmp_path):
    """A DBA mistypes a setting: dwh.load_dim_date fails on every try, the DAG run fails
    naming it, and the etl run is failed with the error logged; fixed, the next run succeeds."""
    [(margin,)] = query(
        source.olap_dsn, "SELECT value FROM etl.config WHERE key = 'date_margin_days'"
    )
    execute(
        source.olap_dsn, "UPDATE etl.config SET value = 'one year' WHERE key = 'date_margin_days'"
    )
    try:
        code, out, error = b2bdwh_airflow(
            source,
            *("test", "dwh_initial_load", "--retry-delay", "0"),
            *("--airflow-home", str(tmp_path / "failing")),
        )
    finally:
        execute(
            source.olap_dsn,
            "UPDATE etl.config SET value = %s WHERE key = 'date_margin_days'",
            (margin,),
        )

    assert code == 1
    assert "task dwh.load_dim_date failed after 3 tries" in error
    assert 'invalid input syntax for type integer: "one year" (SQLSTATE 22P02)' in error
    assert "Airflow's log: " in error
    states = [line.split()[:2] for line in out.splitlines()[2:]]
    assert states[:7] == [
        ["etl.pipeline_idle", "success"],
        ["etl.start_run", "success"],
        ["etl.extract_source", "success"],
        ["etl.purge_change_log", "success"],
        ["dwh.load_dim_date", "up_for_retry"],
        ["dwh.load_dim_date", "up_for_retry"],
        ["dwh.load_dim_date", "failed"],
    ]
    assert states[7:] == [[task, "upstream_failed"] for task in TASKS[5:]]

    *_, first_run_id = first_run
    runs = query(
        source.olap_dsn,
        "SELECT run_id, status, message FROM etl.run WHERE run_id > %s",
        (first_run_id,),
    )
    assert len(runs) == 1, "the retries resumed the failed run; none started another"
    run_id, status, message = runs[0]
    assert status == "failed"
    assert message == 'dwh.load_dim_date failed: invalid input syntax for type integer: "one year"'
    errors = query(
        source.olap_dsn,
        "SELECT procedure_name, sqlstate, message FROM etl.error_log"
        " WHERE run_id = %s AND kind = 'error'",
        (run_id,),
    )
    assert (
        errors
        == [("dwh.load_dim_date", "22P02", 'invalid input syntax for type integer: "one year"')] * 3
    ), "one error per try"
    steps = query(
        source.olap_dsn,
        "SELECT step, status FROM etl.loading_metadata WHERE run_id = %s"
        " ORDER BY loading_metadata_id",
        (run_id,),
    )
    assert steps == [
        ("etl.extract_source", "succeeded"),
        ("etl.purge_change_log", "succeeded"),
        ("dwh.load_dim_date", "failed"),
    ]

    code, out, error = b2bdwh_airflow(
        source, "test", "dwh_initial_load", "--airflow-home", str(tmp_path / "fixed")
    )
    assert (code, error) == (0, ""), out
    [(status,)] = query(source.olap_dsn, "SELECT status FROM etl.run ORDER BY run_id DESC LIMIT 1")
    assert status == "succeeded"


# --- the runner itself ------------------------------------------------------------------------


def test_connections_reach_both_databases_through_the_socket_alone(source, tmp_path):
    """The AIRFLOW_CONN_* values are complete: Airflow's postgres hook reaches the source and
    the warehouse with no PG* variables left in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AIRFLOW"))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("B2B_OLTP_DSN", source.oltp_dsn)
        mp.setenv("B2B_OLAP_DSN", source.olap_dsn)
        env.update(airflow_run.airflow_environment(tmp_path))
    script = (
        "from airflow.providers.postgres.hooks.postgres import PostgresHook\n"
        "for conn_id in ('b2b_sales', 'b2b_sales_olap'):\n"
        "    hook = PostgresHook(postgres_conn_id=conn_id)\n"
        "    print('database:', hook.get_first('SELECT current_database()')[0])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    databases = [
        line.split()[1] for line in proc.stdout.splitlines() if line.startswith("database:")
    ]
    assert databases == [source.oltp_name, source.olap_name]


def test_connection_json_maps_libpq_settings_to_airflow_fields(monkeypatch):
    monkeypatch.setenv("PGHOST", "/run/pg")
    monkeypatch.setenv("PGPORT", "54329")
    monkeypatch.setenv("PGUSER", "etl")
    assert json.loads(airflow_run.connection_json("dbname=b2b_sales_olap")) == {
        "conn_type": "postgres",
        "host": "/run/pg",
        "port": 54329,
        "login": "etl",
        "schema": "b2b_sales_olap",
    }
    conn = json.loads(
        airflow_run.connection_json(
            "host=db.example port=5433 user=b2b_etl password=pw dbname=w sslmode=require"
        )
    )
    assert conn == {
        "conn_type": "postgres",
        "host": "db.example",
        "port": 5433,
        "login": "b2b_etl",
        "password": "pw",
        "schema": "w",
        "extra": {"sslmode": "require"},
    }


def test_env_prints_exports_for_airflow_standalone(capsys, tmp_path):
    args = argparse.ArgumentParser()
    airflow_run.add_arguments(args)
    assert airflow_run.run(args.parse_args(["env", "--airflow-home", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    proc = subprocess.run(["bash", "-c", f"{out}\nenv"], capture_output=True, text=True, check=True)
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve())
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(Path(__file__).resolve().parents[1] / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path.resolve()}/airflow.db"
    )
    for conn_id in ("AIRFLOW_CONN_B2B_SALES", "AIRFLOW_CONN_B2B_SALES_OLAP"):
        assert json.loads(env[conn_id])["conn_type"] == "postgres"


def test_test_refuses_a_conf_that_is_not_a_json_object(capsys):
    args = argparse.ArgumentParser()
    airflow_run.add_arguments(args)
    for conf in ("{batch_size: 5}", "[1]"):
        with pytest.raises(CliError, match="--conf"):
            airflow_run.run(args.parse_args(["test", "dwh_initial_load", "--conf", conf]))
