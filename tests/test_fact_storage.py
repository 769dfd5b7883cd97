"""The facts' hot and cold parts, end to end (issue 14, second part).

`dwh.fact_sales_performance` is one partitioned table: deals closed before the horizon
(`etl.config` cold_horizon) in `dwh.fact_sales_performance_cold`, all others in `_hot`. The
initial load places every fact; the incremental update rewrites a fact in whichever part
holds it and places it again; `CALL etl.run_horizon_move()` (and the DAG dwh_horizon_move)
applies a new horizon in committed batches, both ways, and changes no content. Every run
here ends where a fresh initial load of the same source ends, with every fact where the
horizon places it and one per opportunity (warehouse_compare.assert_consistent). The
horizon move inside the space of CRM statements is tests/test_model_based.py's
`move_horizon`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate, simulate, status
from b2bdwh.compare import SOURCE_DEAL_ROWS
from test_initial_load_dag import b2bdwh_airflow
from test_roles import as_role

SCALE = 0.1  # 880 deals over ten years
YEARS = 10

query, scalar, execute = dbtools.query, dbtools.scalar, dbtools.execute

REPORTS = (
    "dwh.v_sales_by_month",
    "dwh.v_agent_performance",
    "dwh.v_product_performance",
    "dwh.v_pipeline_by_stage",
    "dwh.v_account_performance",
)


@dataclass
class Rig:
    oltp: str
    olap: str
    fresh: str
    warehouse: dbtools.Warehouse


@pytest.fixture
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    generate.generate(warehouse.oltp_dsn, SCALE, 5, years=YEARS)
    name, fresh = wc.attach_warehouse(warehouse.oltp_dsn, "storage_fresh")
    wc.set_config(fresh, "consumer_name", "storage_fresh")
    yield Rig(warehouse.oltp_dsn, warehouse.olap_dsn, fresh, warehouse)
    dbtools.drop_database(name)


def closed_before(oltp: str, day: date) -> set[str]:
    """The source's deals (sales_pipeline's and the archive's) closed before day: what the
    horizon day puts in the cold part."""
    return {
        r[0]
        for r in query(
            oltp,
            f"SELECT opportunity_id FROM ({SOURCE_DEAL_ROWS}) AS d"
            " WHERE deal_stage IN ('Won', 'Lost') AND close_date < %s",
            (day,),
        )
    }


def cold(olap: str) -> set[str]:
    """The live facts in the cold part (a deal deleted in the source keeps its fact, marked)."""
    return {
        r[0]
        for r in query(
            olap, "SELECT opportunity_id FROM dwh.fact_sales_performance_cold WHERE NOT is_deleted"
        )
    }


def reports(olap: str) -> dict[str, list[tuple]]:
    return {v: sorted(query(olap, f"SELECT * FROM {v}"), key=repr) for v in REPORTS}


def lineage(olap: str) -> dict[str, tuple]:
    """Each fact's content and the run that last wrote it."""
    return {
        r[0]: r[1:]
        for r in query(
            olap,
            "SELECT opportunity_id, run_id, deal_stage_key, close_value, archived_at, is_deleted"
            " FROM dwh.fact_sales_performance",
        )
    }


def move(olap: str, horizon: str, batch: int | None = None) -> int:
    """Set the horizon and move; returns the run's id."""
    wc.set_config(olap, "cold_horizon", horizon)
    if batch is None:
        execute(olap, "CALL etl.run_horizon_move()")
    else:
        execute(olap, "CALL etl.run_horizon_move(%s)", (batch,))
    return scalar(olap, "SELECT max(run_id) FROM etl.run")


def assert_matches_a_fresh_load(rig: Rig) -> None:
    assert wc.last_run(rig.olap)[2] == "succeeded", wc.latest_run_problems(rig.olap)
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.olap, rig.fresh, rig.oltp)
    wc.assert_consistent(rig.olap)


def storage_checks(olap: str, run_id: int) -> dict[str, bool]:
    return dict(
        query(
            olap,
            "SELECT check_name, passed FROM etl.validation_result WHERE run_id = %s"
            " AND check_name IN ('one fact per opportunity across the hot and cold parts',"
            "                    'facts are stored where the horizon places them')",
            (run_id,),
        )
    )


def test_the_initial_load_puts_the_old_closed_deals_in_the_cold_part(rig: Rig):
    wc.set_config(rig.olap, "cold_horizon", "2012-01-01")
    wc.run_initial(rig.olap)
    expected = closed_before(rig.oltp, date(2012, 1, 1))
    assert 0 < len(expected) < 880
    assert cold(rig.olap) == expected
    run_id = scalar(rig.olap, "SELECT max(run_id) FROM etl.run")
    assert storage_checks(rig.olap, run_id) == {
        "one fact per opportunity across the hot and cold parts": True,
        "facts are stored where the horizon places them": True,
    }
    assert query(rig.olap, "SELECT cold_before, run_id FROM etl.fact_storage") == [
        (date(2012, 1, 1), run_id)
    ]
    # The fresh warehouse keeps the default (two years before today: every closed deal is
    # cold); the content is the same.
    assert_matches_a_fresh_load(rig)


def test_a_horizon_move_moves_facts_both_ways_in_batches_and_changes_no_content(rig: Rig):
    wc.set_config(rig.olap, "cold_horizon", "2012-01-01")
    wc.run_initial(rig.olap)
    before_reports, before_lineage = reports(rig.olap), lineage(rig.olap)

    later = closed_before(rig.oltp, date(2014, 1, 1))
    moving = later - closed_before(rig.oltp, date(2012, 1, 1))
    run_id = move(rig.olap, "2014-01-01", batch=25)
    assert cold(rig.olap) == later
    [(status, moved, batches, horizon)] = query(
        rig.olap,
        "SELECT status, rows_updated, batches, resume_after FROM etl.loading_metadata"
        " WHERE run_id = %s AND step = 'dwh.move_facts_across_horizon'",
        (run_id,),
    )
    assert (status, moved, horizon) == ("succeeded", len(moving), "2014-01-01")
    assert batches == len(moving) // 25 + 1, "batches of 25, and one that finds the rest"
    assert all(storage_checks(rig.olap, run_id).values())
    assert wc.last_run(rig.olap)[1:3] == ("horizon_move", "succeeded")
    assert reports(rig.olap) == before_reports
    assert lineage(rig.olap) == before_lineage, "a move is storage only: content and run_id stay"

    # An earlier horizon brings facts back hot.
    run_id = move(rig.olap, "2013-01-01")
    assert cold(rig.olap) == closed_before(rig.oltp, date(2013, 1, 1))
    back = later - closed_before(rig.oltp, date(2013, 1, 1))
    assert scalar(
        rig.olap,
        "SELECT rows_updated FROM etl.loading_metadata WHERE run_id = %s"
        " AND step = 'dwh.move_facts_across_horizon'",
        (run_id,),
    ) == len(back)
    # The same horizon again moves nothing; 'none' brings every fact back.
    run_id = move(rig.olap, "2013-01-01")
    assert (
        scalar(
            rig.olap,
            "SELECT rows_updated FROM etl.loading_metadata WHERE run_id = %s"
            " AND step = 'dwh.move_facts_across_horizon'",
            (run_id,),
        )
        == 0
    )
    move(rig.olap, "none")
    assert cold(rig.olap) == set()
    assert reports(rig.olap) == before_reports
    assert_matches_a_fresh_load(rig)


def test_the_incremental_update_writes_each_fact_where_it_is_and_places_it_again(rig: Rig):
    """Archiving in the CRM rewrites cold facts (archived_at) in the cold part; the CRM's
    changes reopen, close and add deals; each run matches a fresh load, every fact where the
    horizon places it."""
    wc.set_config(rig.olap, "cold_horizon", "2016-01-01")
    wc.run_initial(rig.olap)
    with psycopg.connect(rig.oltp, autocommit=True) as conn:
        conn.execute("CALL public.archive_closed_deals('2015-01-01', 100)")
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)
    archived_cold = scalar(
        rig.olap,
        "SELECT count(*) FROM dwh.fact_sales_performance_cold WHERE archived_at IS NOT NULL",
    )
    assert archived_cold == len(closed_before(rig.oltp, date(2015, 1, 1))) > 0

    # An old deal reopened comes back hot; an open one closed long ago goes cold.
    [(old,)] = query(
        rig.oltp,
        "SELECT min(opportunity_id) FROM sales_pipeline"
        " WHERE deal_stage = 'Won' AND close_date < '2016-01-01'",
    )
    [(open_,)] = query(
        rig.oltp, "SELECT min(opportunity_id) FROM sales_pipeline WHERE deal_stage = 'Engaging'"
    )
    execute(
        rig.oltp,
        "UPDATE sales_pipeline SET deal_stage = 'Engaging', close_date = NULL, close_value = NULL"
        " WHERE opportunity_id = %s",
        (old,),
    )
    execute(
        rig.oltp,
        "UPDATE sales_pipeline SET deal_stage = 'Lost', close_date = '2012-03-01', close_value = 0,"
        " engage_date = least(engage_date, '2012-01-01') WHERE opportunity_id = %s",
        (open_,),
    )
    simulate.simulate(rig.oltp, 150, 21)
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)
    run_id = scalar(rig.olap, "SELECT max(run_id) FROM etl.run")
    assert all(storage_checks(rig.olap, run_id).values())
    placed = dict(
        query(
            rig.olap,
            "SELECT opportunity_id, is_cold FROM dwh.fact_sales_performance"
            " WHERE opportunity_id IN (%s, %s)",
            (old, open_),
        )
    )
    assert placed == {old: False, open_: True}


def test_a_killed_move_loses_nothing_and_the_next_finishes_it(rig: Rig):
    """The third batch of a move waits at a pause point and its backend is terminated: two
    batches stay moved, the third is rolled back whole; an incremental update in between
    still matches a fresh load; the next move finishes, the interrupted run marked failed."""
    wc.set_config(rig.olap, "cold_horizon", "2010-01-01")
    wc.run_initial(rig.olap)
    target = closed_before(rig.oltp, date(2016, 1, 1))
    start = cold(rig.olap)
    wc.set_config(rig.olap, "cold_horizon", "2016-01-01")
    first = scalar(rig.olap, "SELECT max(run_id) FROM etl.run")
    pause = wc.PausePoint(rig.olap).on_statement("dwh.fact_sales_performance", "UPDATE", 3)
    try:
        pause.hold()
        call = wc.BackgroundCall(rig.olap, "CALL etl.run_horizon_move(20)")
        pid = pause.wait_until_paused(call)
        pause.kill(pid)
        assert isinstance(call.join(), psycopg.OperationalError)
    finally:
        pause.close()
    assert len(cold(rig.olap) - start) == 40, "two batches of 20 committed, the third rolled back"
    counts = query(
        rig.olap, "SELECT count(*), count(DISTINCT opportunity_id) FROM dwh.fact_sales_performance"
    )
    assert counts == [(880, 880)]

    simulate.simulate(rig.oltp, 100, 22)
    wc.run_incremental(rig.olap)
    assert wc.last_run(rig.olap)[1:3] == ("incremental_update", "succeeded")
    # The incremental run marked the dead move failed and succeeded itself; `b2bdwh status`
    # still says the move did not finish, and what to do.
    report = status.status(rig.olap)
    assert [p for p in report.problems if "horizon move" in p] == [
        f"the latest horizon move, run {first + 1}, failed (its message is in the runs above):"
        " some facts may be in the other part than the horizon places them in; fix the cause,"
        " then CALL etl.run_horizon_move();"
    ], report.problems
    assert "horizon: deals closed before 2016-01-01 are cold" in report.text
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.olap, rig.fresh, rig.oltp)

    run_id = move(rig.olap, "2016-01-01", batch=20)
    assert cold(rig.olap) == closed_before(rig.oltp, date(2016, 1, 1)) != start
    assert target, "the source had old deals to move"
    statuses = query(
        rig.olap,
        "SELECT status, coalesce(message LIKE 'interrupted%%', false) FROM etl.run"
        " WHERE pipeline = 'horizon_move' AND run_id > %s ORDER BY run_id",
        (first,),
    )
    assert statuses == [("failed", True), ("succeeded", False)]
    assert all(storage_checks(rig.olap, run_id).values())
    assert not [p for p in status.status(rig.olap).problems if "horizon move" in p]
    assert_matches_a_fresh_load(rig)


def test_a_horizon_that_is_not_one_stops_the_run_before_it_changes_anything(rig: Rig):
    """A mistyped cold_horizon stops a horizon move and an initial load at their start, with
    what to do: no run is started, nothing moves, and the loaded warehouse stays (an initial
    load that started anyway would have emptied it before failing at its fact step)."""
    wc.run_initial(rig.olap)
    before, runs = cold(rig.olap), wc.last_run(rig.olap)
    facts = scalar(rig.olap, "SELECT count(*) FROM dwh.fact_sales_performance")
    for value in ("two years", "-1 year", "20170601"):
        wc.set_config(rig.olap, "cold_horizon", value)
        for call in ("CALL etl.run_horizon_move()", "CALL etl.run_initial_load()"):
            with pytest.raises(psycopg.Error) as raised:
                execute(rig.olap, call)
            assert raised.value.sqlstate == "22023", (value, call)
            assert (
                f"cold_horizon '{value}': not a positive interval, a date as YYYY-MM-DD or 'none'"
                in str(raised.value)
            )
            assert "UPDATE etl.config" in (raised.value.diag.message_hint or "")
    assert wc.last_run(rig.olap) == runs, "no run was started"
    assert cold(rig.olap) == before
    assert scalar(rig.olap, "SELECT count(*) FROM dwh.fact_sales_performance") == facts
    move(rig.olap, "2 years")
    assert wc.last_run(rig.olap)[2] == "succeeded"


def test_the_etl_role_moves_the_reader_cannot_and_nobody_calls_the_unit(rig: Rig):
    wc.run_initial(rig.olap)
    wc.set_config(rig.olap, "cold_horizon", "2014-01-01")
    execute(as_role(rig.olap, "b2b_etl"), "CALL etl.run_horizon_move()")
    assert wc.last_run(rig.olap)[1:3] == ("horizon_move", "succeeded")
    assert cold(rig.olap) == closed_before(rig.oltp, date(2014, 1, 1))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        execute(as_role(rig.olap, "b2b_reader"), "CALL etl.run_horizon_move()")
    run_id = scalar(rig.olap, "SELECT max(run_id) FROM etl.run")
    step = scalar(
        rig.olap,
        "SELECT min(loading_metadata_id) FROM etl.loading_metadata WHERE run_id = %s",
        (run_id,),
    )
    with pytest.raises(psycopg.Error) as raised:
        execute(as_role(rig.olap, "b2b_etl"), "SELECT dwh.move_fact_batch(%s)", (step,))
    assert raised.value.sqlstate == "55000", raised.value  # etl.assert_step_executor
    # The reader sees the table and both parts; writes are the owner's.
    assert (
        scalar(
            as_role(rig.olap, "b2b_reader"), "SELECT count(*) FROM dwh.fact_sales_performance_cold"
        )
        > 0
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        execute(
            as_role(rig.olap, "b2b_etl"),
            "UPDATE dwh.fact_sales_performance SET is_cold = NOT is_cold WHERE opportunity_id = %s",
            ("x",),
        )


@pytest.mark.slow
def test_the_dag_moves_the_facts_through_airflow(rig: Rig, tmp_path):
    wc.set_config(rig.olap, "cold_horizon", "2012-01-01")
    wc.run_initial(rig.olap)
    wc.set_config(rig.olap, "cold_horizon", "2015-01-01")
    code, out, error = b2bdwh_airflow(
        rig.warehouse,
        *("test", "dwh_horizon_move", "--conf", json.dumps({"batch_size": 50})),
        *("--airflow-home", str(tmp_path / "airflow")),
    )
    assert (code, error) == (0, ""), out
    tasks = [line.split()[:2] for line in out.splitlines()[2:-1]]
    assert tasks == [
        [task, "success"]
        for task in (
            "etl.pipeline_idle",
            "etl.start_run",
            "dwh.move_facts_across_horizon",
            "etl.validate_run",
            "etl.finish_run",
        )
    ]
    assert query(
        rig.olap,
        "SELECT pipeline, status, batch_size, started_by FROM etl.run ORDER BY run_id DESC LIMIT 1",
    ) == [("horizon_move", "succeeded", 50, "b2b_etl")]
    assert cold(rig.olap) == closed_before(rig.oltp, date(2015, 1, 1))
    assert_matches_a_fresh_load(rig)


def test_the_consistency_checks_see_a_fact_out_of_place_and_one_in_both_parts(rig: Rig):
    """The checks every end-to-end test runs after a run (warehouse_compare.assert_consistent)
    are not blind to what this storage could get wrong."""
    wc.set_config(rig.olap, "cold_horizon", "2014-01-01")
    wc.run_initial(rig.olap)
    assert wc.consistency_problems(rig.olap) == []
    [(key,)] = query(rig.olap, "SELECT min(opportunity_id) FROM dwh.fact_sales_performance_cold")
    execute(
        rig.olap,
        "UPDATE dwh.fact_sales_performance SET is_cold = false WHERE opportunity_id = %s",
        (key,),
    )
    assert any(
        "other part than the horizon" in p and key in p for p in wc.consistency_problems(rig.olap)
    )
    execute(
        rig.olap,
        # the part's own check (a write naming the part fires the part's trigger)
        "ALTER TABLE dwh.fact_sales_performance_cold"
        " DISABLE TRIGGER one_fact_per_opportunity_insert",
    )
    columns = (
        "opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key,"
        " engage_date_key, close_date_key, close_value, list_price, is_won, is_closed,"
        " days_to_close, is_deleted, run_id, archived_at"
    )
    execute(
        rig.olap,
        f"INSERT INTO dwh.fact_sales_performance_cold ({columns}, is_cold)"
        f" SELECT {columns}, true FROM dwh.fact_sales_performance_hot WHERE opportunity_id = %s",
        (key,),
    )
    assert any(
        "in both the hot and the cold part" in p and key in p
        for p in wc.consistency_problems(rig.olap)
    )


def test_two_writers_at_once_cannot_both_give_a_deal_a_fact(rig: Rig):
    """Two sessions write the same new deal into the two parts at once (DBAs: the pipeline
    holds its lock). The second one's check waits for the first to commit, then sees its row
    and refuses (23505); without the check's own lock both would commit."""
    wc.run_initial(rig.olap)
    row = (
        "SELECT 'TWO-WRITERS', account_key, product_key, sales_agent_key, deal_stage_key,"
        " engage_date_key, close_date_key, is_won, is_closed, run_id, %s"
        " FROM dwh.fact_sales_performance LIMIT 1"
    )
    insert = (
        "INSERT INTO dwh.fact_sales_performance (opportunity_id, account_key, product_key,"
        " sales_agent_key, deal_stage_key, engage_date_key, close_date_key, is_won, is_closed,"
        " run_id, is_cold) " + row
    )
    with psycopg.connect(rig.olap) as first:
        first.execute(insert, (False,))  # its check ran; the transaction stays open
        second = wc.BackgroundCall(rig.olap, insert, (True,))
        deadline = time.monotonic() + 30
        while not scalar(
            rig.olap,
            "SELECT count(*) FROM pg_locks"
            " WHERE locktype = 'advisory' AND NOT granted AND pid = %s",
            (second.pid,),
        ):
            assert time.monotonic() < deadline, "the second writer's check never waited"
            time.sleep(0.05)
        first.commit()
    outcome = second.join()
    assert isinstance(outcome, psycopg.errors.UniqueViolation), outcome
    assert "TWO-WRITERS would have a fact in both parts" in str(outcome)
    assert query(
        rig.olap,
        "SELECT is_cold FROM dwh.fact_sales_performance WHERE opportunity_id = 'TWO-WRITERS'",
    ) == [(False,)]
