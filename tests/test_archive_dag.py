"""crm_archive_closed_deals: the CRM's archiving through a real Airflow.

The DAG's shape and params are read from Airflow's DagBag, its cut-off expression is
evaluated by PostgreSQL exactly as the DAG writes it, and the scheduler's own computation
gives its first run. End to end, `b2bdwh airflow test` (Airflow's dag.test(), as
tests/test_initial_load_dag.py runs the warehouse's DAGs) runs it against a source
generated at scale 1 and a warehouse loaded from it: the run moves the closed deals that
closed before the cut-off into public.sales_pipeline_archive, its log carries the
routine's notices, a second run moves nothing more, the default rule (`keep` before the
run, to the first of that month) archives what it says, a bad param stops the run before
anything moves, and the incremental update afterwards ends where a fresh initial load of
the same source ends, every archived deal live and marked archived.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate
from test_dags import dagbag  # noqa: F401  (the fixture)
from test_initial_load_dag import b2bdwh_airflow

DAG_ID = "crm_archive_closed_deals"
TASK_ID = "public.archive_closed_deals"
SCALE = 1  # 8,800 deals, closed from 2016-10 to 2018-01
CUT_OFF = date(2017, 1, 1)
BATCH_ROWS = 200  # a few batches at this scale

query, scalar = dbtools.query, dbtools.scalar

CLOSED_BEFORE = """
    SELECT opportunity_id FROM public.sales_pipeline
     WHERE deal_stage IN ('Won', 'Lost') AND close_date < %s ORDER BY 1"""


# --- the DAG as Airflow reads it ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dag(dagbag):  # noqa: F811
    return dagbag.dags[DAG_ID]


def test_one_call_on_the_source_with_autocommit_and_the_notices_logged(dag):
    (task,) = dag.tasks
    assert task.task_id == TASK_ID
    assert task.conn_id == "b2b_sales", "the CRM's database, not the warehouse"
    assert task.autocommit is True, "the procedure commits per batch"
    assert task.hook_params == {"enable_log_db_messages": True}
    assert task.sql.startswith("CALL public.archive_closed_deals(coalesce(%(closed_before)s::date")
    assert task.sql.endswith(", %(batch_rows)s::integer, NULL)")
    assert task.retries >= 1, "resumable: a retry finishes the work"


def test_params_and_their_defaults(dag):
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    assert {name: dag.params[name] for name in dag.params} == {
        "closed_before": None,
        "keep": "2 years",
        "batch_rows": 10000,
    }
    accepted = {
        "closed_before": [None, "2017-01-01", "2016-02-29"],
        "keep": ["2 years", "18 months", "1 year 6 months", "90 days", "1 week"],
        "batch_rows": [1, 10000],
    }
    refused = {
        "closed_before": ["2017-02-30", "2017-1-1", "01/01/2017", "yesterday", 20170101],
        "keep": ["two years", "-2 years", "2 years ago", "", "2", "2 years; DROP TABLE x"],
        "batch_rows": [0, -1, 1.5, "100", None],
    }
    for name, values in accepted.items():
        schema = dag.params.get_param(name).schema
        for value in values:
            assert Param(value, **schema).resolve() == value, (name, value)
    for name, values in refused.items():
        schema = dag.params.get_param(name).schema
        for value in values:
            with pytest.raises(ParamValidationError):
                Param(value, **schema).resolve()
                pytest.fail(f"{name}={value!r} accepted")


def test_scheduled_monthly_first_run_on_the_next_first_of_a_month(dag):
    """The scheduler's own computation (the serialized DAG it reads): an unpaused DAG that
    Airflow has not run yet starts on the next 1st, never at once for a past one (what a
    start_date in the past and catchup=False would do), and then every month."""
    from airflow.serialization.serialized_objects import DagSerialization

    scheduled = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    now = datetime.now(UTC)
    first = scheduled.next_dagrun_info(last_automated_run_info=None)
    assert first.run_after > now
    assert (first.run_after.day, first.run_after.time()) == (1, datetime.min.time())
    assert first.run_after - now <= timedelta(days=31)
    assert first.run_after.utcoffset() == timedelta(0), "in UTC"
    second = scheduled.next_dagrun_info(last_automated_run_info=first)
    assert second.run_after.day == 1 and 28 <= (second.run_after - first.run_after).days <= 31
    assert dag.catchup is False and dag.max_active_runs == 1


def cut_off(dag: Any, dsn: str, timezone: str, **values: Any) -> date:
    """The cut-off the DAG's CALL would pass, evaluated by PostgreSQL from the DAG's own SQL:
    its arguments selected instead of called."""
    (task,) = dag.tasks
    prefix = "CALL public.archive_closed_deals("
    arguments = task.sql.removeprefix(prefix).removesuffix(")")
    params = {"closed_before": None, "keep": "2 years", "batch_rows": 10000, **values}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", (timezone,))
        row = conn.execute(f"SELECT {arguments}", params).fetchone()
    assert row is not None and row[1:] == (params["batch_rows"], None)
    return row[0]


@pytest.mark.parametrize(
    ("run_after", "values", "expected"),
    [
        # The scheduled run of a month: `keep` before it, to the day.
        ("2026-03-01 00:00Z", {}, date(2024, 3, 1)),
        # A manual run in mid-month: the first of the month `keep` before it.
        ("2026-03-17 10:00Z", {}, date(2024, 3, 1)),
        ("2026-03-01 00:00Z", {"keep": "45 days"}, date(2026, 1, 1)),
        ("2026-03-31 23:59Z", {"keep": "1 month"}, date(2026, 2, 1)),
        # Late on the last day of a month in UTC is that month, whatever the session's zone.
        ("2026-02-28 23:30Z", {"keep": "0 days"}, date(2026, 2, 1)),
        # closed_before, when given, is the cut-off.
        ("2026-03-01 00:00Z", {"closed_before": "2017-01-01"}, date(2017, 1, 1)),
    ],
)
@pytest.mark.parametrize("timezone", ["UTC", "Pacific/Kiritimati", "America/Los_Angeles"])
def test_the_cut_off_rule(dag, run_after, values, expected, timezone):
    at = datetime.fromisoformat(run_after.replace("Z", "+00:00"))
    assert cut_off(dag, dbtools.admin_dsn(), timezone, run_after=at, **values) == expected


# --- end to end through Airflow -----------------------------------------------------------------


@dataclass
class Rig:
    warehouse: dbtools.Warehouse
    fresh: str  # a second warehouse on the same source, for a fresh initial load
    homes: Path

    @property
    def oltp(self) -> str:
        return self.warehouse.oltp_dsn

    @property
    def olap(self) -> str:
        return self.warehouse.olap_dsn

    def archive(self, label: str, conf: dict[str, Any]) -> tuple[int, str, str, Path]:
        """The DAG run once with `conf`: exit code, output, error, its AIRFLOW_HOME."""
        home = self.homes / label
        code, out, error = b2bdwh_airflow(
            self.warehouse,
            *("test", DAG_ID, "--conf", json.dumps(conf)),
            *("--airflow-home", str(home), "--retry-delay", "0"),
        )
        return code, out, error, home


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A generated source, the warehouse loaded from it, and an empty second warehouse."""
    generate.generate(warehouse.oltp_dsn, SCALE)
    wc.run_initial(warehouse.olap_dsn)
    name, fresh = wc.attach_warehouse(warehouse.oltp_dsn, "archive_dag_fresh")
    wc.set_config(fresh, "consumer_name", "archive_dag_fresh")
    yield Rig(warehouse, fresh, tmp_path_factory.mktemp("airflow"))
    dbtools.drop_database(name)


def archived(oltp: str) -> dict[str, datetime]:
    return dict(
        query(oltp, "SELECT opportunity_id, archived_at FROM public.sales_pipeline_archive")
    )


def notices(home: Path) -> list[str]:
    """The routine's notices in the task's log (dag.test() writes it to dag_test.log)."""
    return [
        line.split("] ", 1)[1].split(" [airflow.task.hooks", 1)[0]
        for line in (home / "dag_test.log").read_text().splitlines()
        if "[airflow.task.hooks" in line and "deals closed before" in line
    ]


def metadata(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(home / "airflow.db") as db:
        return db.execute(sql, (DAG_ID,)).fetchall()


def moved_by(home: Path) -> int:
    """The task's XCom: the procedure's INOUT `archived`, the deals this run moved."""
    [(value,)] = metadata(home, "SELECT value FROM xcom WHERE dag_id = ? AND key = 'return_value'")
    [row] = json.loads(value)
    return row["__data__"][0]


@pytest.fixture(scope="module")
def first_run(rig: Rig) -> tuple[list[str], tuple[int, str, str, Path]]:
    """The closed deals before the cut-off, then the DAG run with that cut-off."""
    expected = [r[0] for r in query(rig.oltp, CLOSED_BEFORE, (CUT_OFF,))]
    return expected, rig.archive("first", {"closed_before": str(CUT_OFF), "batch_rows": BATCH_ROWS})


@pytest.mark.slow
def test_the_run_moves_the_deals_closed_before_the_cut_off(rig, first_run):
    expected, (code, out, error, _home) = first_run
    assert (code, error) == (0, ""), out
    assert [line.split()[:2] for line in out.splitlines()[2:-1]] == [[TASK_ID, "success"]]
    assert len(expected) > 2 * BATCH_ROWS, "several batches"
    assert sorted(archived(rig.oltp)) == expected
    assert query(rig.oltp, CLOSED_BEFORE, (CUT_OFF,)) == []
    later = scalar(
        rig.oltp, "SELECT count(*) FROM public.sales_pipeline WHERE close_date >= %s", (CUT_OFF,)
    )
    assert later > 0, "deals closed on and after the cut-off stay"


@pytest.mark.slow
def test_its_log_shows_each_batch_and_its_xcom_the_deals_moved(first_run):
    expected, (_code, _out, _error, home) = first_run
    batches = -(-len(expected) // BATCH_ROWS)
    lines = notices(home)
    assert len(lines) == batches, lines
    assert lines[-1] == (
        f"archived {len(expected) - (batches - 1) * BATCH_ROWS} deals closed before {CUT_OFF}"
        f" ({len(expected)} in this call)"
    )
    assert moved_by(home) == len(expected)


@pytest.mark.slow
def test_a_second_run_moves_nothing_more(rig, first_run):
    before = archived(rig.oltp)
    code, out, error, home = rig.archive(
        "second", {"closed_before": str(CUT_OFF), "batch_rows": BATCH_ROWS}
    )
    assert (code, error) == (0, ""), out
    assert archived(rig.oltp) == before, "the same deals, archived when they were"
    assert moved_by(home) == 0
    assert notices(home) == []


@pytest.mark.slow
def test_without_closed_before_the_cut_off_is_the_first_of_the_month_keep_before(rig, first_run):
    """`keep` in days, chosen so that the day it gives falls mid-July 2017: the cut-off is
    2017-07-01 (the deals closed from the 1st to that day stay), read from the run's own
    run_after as Airflow recorded it."""
    keep = (datetime.now(UTC).date() - date(2017, 7, 15)).days
    before = archived(rig.oltp)
    expected = {r[0] for r in query(rig.oltp, CLOSED_BEFORE, (date(2017, 7, 1),))}
    code, out, error, home = rig.archive("keep", {"keep": f"{keep} days"})
    assert (code, error) == (0, ""), out
    [(run_after,)] = metadata(home, "SELECT run_after FROM dag_run WHERE dag_id = ?")
    day = datetime.fromisoformat(run_after).date() - timedelta(days=keep)
    rule = day.replace(day=1)
    assert (rule, day.day > 1) == (date(2017, 7, 1), True), run_after
    moved = set(archived(rig.oltp)) - set(before)
    assert expected and moved == expected
    assert query(rig.oltp, CLOSED_BEFORE, (rule,)) == [], "nothing closed before it is left"
    stayed = scalar(
        rig.oltp,
        "SELECT count(*) FROM public.sales_pipeline"
        " WHERE deal_stage IN ('Won', 'Lost') AND close_date >= %s AND close_date < %s",
        (rule, day),
    )
    assert stayed > 0, "deals closed between the first of the month and that day stay"
    assert notices(home)[-1].endswith(f"closed before {rule} ({len(moved)} in this call)")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"batch_rows": 0}, "Invalid input for param batch_rows: 0 is less than the minimum of 1"),
        (
            {"closed_before": "2017-02-30"},
            "Invalid input for param closed_before: '2017-02-30' is not a 'date'",
        ),
    ],
    ids=["batch_rows_0", "malformed_date"],
)
def test_a_bad_param_stops_the_run_before_anything_moves(rig, first_run, conf, message):
    before = archived(rig.oltp)
    deals = scalar(rig.oltp, "SELECT count(*) FROM public.sales_pipeline")
    code, out, error, _home = rig.archive(f"bad_{next(iter(conf))}", conf)
    assert code == 1, out
    assert f"{DAG_ID}: the DAG run could not start: ParamValidationError: {message}" in error
    assert archived(rig.oltp) == before
    assert scalar(rig.oltp, "SELECT count(*) FROM public.sales_pipeline") == deals


@pytest.mark.slow
def test_the_incremental_update_keeps_every_archived_deal_live(rig, first_run):
    """After the DAG's runs, the next incremental update ends where a fresh initial load of
    the same source ends, and every archived deal is a live fact marked archived."""
    in_archive = archived(rig.oltp)
    assert len(in_archive) >= len(first_run[0]) > 0, "the runs above archived"
    wc.run_incremental(rig.olap)
    assert wc.last_run(rig.olap)[2] == "succeeded", wc.latest_run_problems(rig.olap)
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.olap, rig.fresh, rig.oltp)
    wc.assert_consistent(rig.olap)
    live_archived = (
        "SELECT opportunity_id, archived_at FROM dwh.fact_sales_performance"
        " WHERE archived_at IS NOT NULL AND NOT is_deleted"
    )
    assert dict(query(rig.olap, live_archived)) == in_archive
    assert dict(query(rig.fresh, live_archived)) == in_archive
    assert scalar(rig.olap, "SELECT count(*) FROM dwh.fact_sales_performance WHERE is_deleted") == 0
