"""dwh_incremental_update end to end through a real Airflow: after an initial load and
a burst of ordinary CRM transactions, the DAG applies them, and the warehouse then
agrees with the SOURCE tables directly. A source replaced by `generate` stops the next
run with a clear message instead of applying half a picture."""

from __future__ import annotations

import psycopg
import pytest

import warehouse_compare as wc
from b2bdwh.generate import generate
from b2bdwh.simulate import simulate
from test_initial_load_dag import b2bdwh_airflow, execute, query

pytestmark = pytest.mark.slow

# The branch follows the steps: a run started (an initial load exists, nothing else going).
TASKS = ["etl.start_run", "run_started", *wc.INCREMENTAL_STEPS]


@pytest.fixture(scope="module")
def applied(warehouse, tmp_path_factory):
    """An initial load, 400 simulated changes, then the DAG: (exit code, output, error)."""
    generate(warehouse.oltp_dsn, 0.2)
    execute(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    simulate(warehouse.oltp_dsn, 400, seed=7)
    home = tmp_path_factory.mktemp("airflow")
    result = b2bdwh_airflow(
        warehouse, "test", "dwh_incremental_update", "--airflow-home", str(home)
    )
    return warehouse, result


def test_every_task_succeeds(applied):
    _warehouse, (code, out, error) = applied
    assert (code, error) == (0, ""), out
    tasks = [line.split()[:2] for line in out.splitlines()[2:-1]]
    assert tasks == [[task, "success"] for task in TASKS] + [["no_run_started", "skipped"]]


def test_the_run_applied_its_window_and_every_check_passed(applied):
    warehouse, _result = applied
    [(status, window_applied, changes)] = query(
        warehouse.olap_dsn,
        "SELECT status, window_applied, changes_in_window FROM etl.run"
        " WHERE pipeline = 'incremental_update'",
    )
    assert (status, window_applied) == ("succeeded", True)
    assert changes >= 400
    failed = query(
        warehouse.olap_dsn,
        "SELECT check_name FROM etl.validation_result v JOIN etl.run r USING (run_id)"
        " WHERE r.pipeline = 'incremental_update' AND NOT v.passed",
    )
    assert failed == []


def test_live_facts_reconcile_with_the_source_per_deal_stage(applied):
    warehouse, _result = applied
    in_source = query(
        warehouse.oltp_dsn,
        "SELECT deal_stage, count(*), coalesce(sum(close_value), 0)::numeric(18, 2)"
        " FROM sales_pipeline GROUP BY 1 ORDER BY 1",
    )
    in_facts = query(
        warehouse.olap_dsn,
        "SELECT s.deal_stage_name, count(*), coalesce(sum(f.close_value), 0)"
        " FROM dwh.fact_sales_performance f JOIN dwh.dim_deal_stage s USING (deal_stage_key)"
        " WHERE NOT f.is_deleted GROUP BY 1 ORDER BY 1",
    )
    assert in_facts == in_source


def test_deleted_deals_are_kept_marked_deleted(applied):
    warehouse, _result = applied
    live = {r[0] for r in query(warehouse.oltp_dsn, "SELECT opportunity_id FROM sales_pipeline")}
    deleted = query(
        warehouse.olap_dsn,
        "SELECT opportunity_id FROM dwh.fact_sales_performance WHERE is_deleted",
    )
    assert deleted, "the simulation deletes deals"
    assert not {r[0] for r in deleted} & live


def test_the_source_was_told_what_it_may_purge(applied):
    warehouse, _result = applied
    [(consumer, retention)] = query(
        warehouse.oltp_dsn, "SELECT consumer_name, retention::text FROM cdc.consumer"
    )
    # Under its own database's name (etl.config consumer_name is empty by default).
    assert (consumer, retention) == (warehouse.olap_name, "7 days")


def test_a_replaced_source_stops_the_next_run_with_a_clear_message(applied, tmp_path_factory):
    warehouse, _result = applied
    generate(warehouse.oltp_dsn, 0.1, seed=2)
    home = tmp_path_factory.mktemp("airflow")
    code, out, error = b2bdwh_airflow(
        warehouse,
        "test",
        "dwh_incremental_update",
        "--airflow-home",
        str(home),
        "--retry-delay",
        "0",
    )
    assert code == 1, out
    assert "etl.pull_change_window" in error
    assert "the source was replaced since the last load" in error
    with psycopg.connect(warehouse.olap_dsn) as conn:
        status, message = conn.execute(
            "SELECT status, message FROM etl.run ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
    assert status == "failed"
    assert message.startswith("etl.pull_change_window failed: the source was replaced")
    hint = query(
        warehouse.olap_dsn,
        "SELECT hint FROM etl.error_log WHERE procedure_name = 'etl.pull_change_window'"
        " ORDER BY error_id DESC LIMIT 1",
    )
    assert "etl.run_initial_load" in hint[0][0]
