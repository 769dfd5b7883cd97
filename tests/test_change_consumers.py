"""Several warehouses on one source (CONTRACT: each warehouse is its own change consumer;
a window whose start the change log no longer covers is refused, never applied partially).

One source, warehouse A (purges at once: change_retention 0) and warehouse B (7 days), and
later a copy of A taken before runs that purged. The tests run in order, as one story:

1. each registers under its own database's name when its initial load has extracted;
2. A applies and purges while B lags: B's changes are held back, and B's next run applies
   them;
3. B stops reporting for longer than its retention: the purge passes it, `b2bdwh status`
   says so (exit 2, with the way out), and B's next run is refused with 55000 and the hint,
   nothing applied; after an initial load it works again;
4. the copy of A, made before A's later runs purged, is refused likewise until reloaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate, simulate, status

SCALE = 0.05  # 440 deals
CHANGES = 60
HINT = "CALL etl.run_initial_load();"


@dataclass
class Pair:
    oltp: str
    a_name: str
    a: str
    b_name: str
    b: str
    seed: int = 100

    def simulate(self) -> None:
        self.seed += 1
        simulate.simulate(self.oltp, CHANGES, seed=self.seed)


@pytest.fixture(scope="module")
def pair(warehouse: dbtools.Warehouse) -> Iterator[Pair]:
    generate.generate(warehouse.oltp_dsn, SCALE)
    b_name, b = wc.attach_warehouse(warehouse.oltp_dsn, "consumer_b")
    wc.set_config(warehouse.olap_dsn, "change_retention", "0 seconds")
    yield Pair(warehouse.oltp_dsn, warehouse.olap_name, warehouse.olap_dsn, b_name, b)
    dbtools.drop_database(b_name)


def consumers(oltp: str) -> dict[str, tuple[str, str]]:
    """consumer_name: (applied_xmin, retention) of the source's readers."""
    rows = wc.fetch(
        oltp, "SELECT consumer_name, applied_xmin::text, retention::text FROM cdc.consumer"
    )
    return {name: (xmin, retention) for name, xmin, retention in rows}


def window_start(olap: str) -> str:
    """The xmin of the last applied snapshot: where the warehouse's next window starts."""
    return wc.scalar(
        olap,
        "SELECT pg_snapshot_xmin(source_snapshot)::text FROM etl.run WHERE window_applied"
        " ORDER BY run_id DESC LIMIT 1",
    )


def unapplied_changes(oltp: str, olap: str) -> int:
    """Changes in the source's log from the warehouse's window start on."""
    return wc.scalar(
        oltp, "SELECT count(*) FROM cdc.change_log WHERE txid >= %s::xid8", (window_start(olap),)
    )


def horizon(oltp: str) -> str:
    return wc.scalar(oltp, "SELECT horizon::text FROM cdc.purge_horizon")


def run_status(olap: str, monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setenv("B2B_OLAP_DSN", olap)
    parser = argparse.ArgumentParser()
    status.add_arguments(parser)
    code = status.run(parser.parse_args([]))
    return code, capsys.readouterr().out


def assert_refused(olap: str) -> None:
    """The next incremental update is refused before it stages anything: 55000, a message
    naming the purge, the hint; the star schema untouched, the run failed, the window not
    applied."""
    before = wc.exact_state(olap)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        wc.run_incremental(olap)
    assert "no longer covers this warehouse's window" in refused.value.diag.message_primary
    assert refused.value.diag.message_hint == HINT
    run_id, pipeline, run_status_, message = wc.last_run(olap)
    assert (pipeline, run_status_) == ("incremental_update", "failed")
    assert message.startswith("etl.pull_change_window failed: the source's change log no longer")
    assert wc.fetch(
        olap,
        "SELECT window_applied, changes_in_window FROM etl.run WHERE run_id = %s",
        (run_id,),
    ) == [(False, None)]
    assert wc.fetch(
        olap,
        "SELECT procedure_name, sqlstate FROM etl.error_log WHERE run_id = %s AND kind = 'error'",
        (run_id,),
    ) == [("etl.pull_change_window", "55000")]
    assert wc.exact_state(olap) == before, "a refused window applied something"


def test_each_warehouse_is_a_consumer_named_after_its_database(pair: Pair) -> None:
    for olap, name in ((pair.a, pair.a_name), (pair.b, pair.b_name)):
        assert wc.scalar(olap, "SELECT value FROM etl.config WHERE key = 'consumer_name'") == ""
        assert wc.scalar(olap, "SELECT etl.consumer_name()") == name
    # A name set on purpose wins.
    wc.set_config(pair.b, "consumer_name", "  ")
    assert wc.scalar(pair.b, "SELECT etl.consumer_name()") == pair.b_name
    wc.set_config(pair.b, "consumer_name", "reporting_copy")
    assert wc.scalar(pair.b, "SELECT etl.consumer_name()") == "reporting_copy"
    wc.set_config(pair.b, "consumer_name", "")


def test_the_initial_load_registers_its_snapshot(pair: Pair) -> None:
    wc.run_initial(pair.a)
    wc.run_initial(pair.b)
    assert consumers(pair.oltp) == {
        pair.a_name: (window_start(pair.a), "00:00:00"),
        pair.b_name: (window_start(pair.b), "7 days"),
    }


def test_a_lagging_warehouse_is_held_back_and_then_catches_up(pair: Pair) -> None:
    pair.simulate()
    wc.run_incremental(pair.a)  # A's report purges at once what every live reader applied
    pair.simulate()
    waiting = unapplied_changes(pair.oltp, pair.b)
    assert waiting > CHANGES, "B has two sets of changes to apply"
    wc.run_incremental(pair.a)
    wc.run_incremental(pair.a)
    assert consumers(pair.oltp)[pair.a_name][0] == window_start(pair.a)
    # Nothing B has not applied was purged, though A applied it all and purges at once.
    assert unapplied_changes(pair.oltp, pair.b) == waiting
    assert int(horizon(pair.oltp)) <= int(window_start(pair.b))
    wc.run_incremental(pair.b)
    assert (
        wc.scalar(pair.b, "SELECT changes_in_window FROM etl.run ORDER BY run_id DESC LIMIT 1")
        == waiting
    )
    wc.assert_same_live_content(pair.b, pair.a, pair.oltp)
    # B reported its new position: what it applied may go now.
    wc.run_incremental(pair.a)
    assert int(horizon(pair.oltp)) > 0
    assert consumers(pair.oltp)[pair.b_name][0] == window_start(pair.b)


def test_a_warehouse_silent_beyond_its_retention_is_dropped_and_refused(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, out = run_status(pair.b, monkeypatch, capsys)
    assert code == 0, out
    assert f"  name: {pair.b_name}" in out
    assert "  purge: held back for the changes it has not applied" in out
    # The other reader, A: with retention 0 it holds the purge back only as it reports.
    assert f"  other reader: {pair.a_name}, position " in out
    assert "ago, dropped (older than its retention)" in out

    pair.simulate()
    # B has not reported for 8 days, longer than its retention (7 days).
    wc.call(
        pair.oltp,
        "UPDATE cdc.consumer SET reported_at = reported_at - interval '8 days'"
        " WHERE consumer_name = %s",
        (pair.b_name,),
    )
    wc.run_incremental(pair.a)  # A's report no longer waits for B
    assert unapplied_changes(pair.oltp, pair.b) == 0, "the purge proceeded past B"
    assert int(horizon(pair.oltp)) > int(window_start(pair.b))

    code, out = run_status(pair.b, monkeypatch, capsys)
    assert code == status.UNHEALTHY
    assert "  purge: DROPPED: no report for 8d" in out
    assert f"  purge horizon: {horizon(pair.oltp)} (changes below it may be gone" in out
    assert "the source purged changes this warehouse has not applied" in out
    assert "the next incremental update will be refused; CALL etl.run_initial_load();" in out

    assert_refused(pair.b)
    assert_refused(pair.b)  # and again: a refusal does not move the window on

    wc.run_initial(pair.b)
    assert consumers(pair.oltp)[pair.b_name][0] == window_start(pair.b)
    pair.simulate()
    wc.run_incremental(pair.b)
    wc.run_incremental(pair.a)
    wc.assert_same_live_content(pair.b, pair.a, pair.oltp)
    code, out = run_status(pair.b, monkeypatch, capsys)
    assert code == 0, out


def test_a_copy_of_an_older_state_is_refused_until_reloaded(pair: Pair) -> None:
    copy_name = f"{pair.a_name}_copy"
    copy = dbtools.create_database(copy_name, pair.a_name)  # a backup of A, as it is now
    try:
        assert wc.scalar(copy, "SELECT etl.consumer_name()") == copy_name
        pair.simulate()
        wc.run_incremental(pair.a)  # A purges at once (B holds back only what B lacks)
        wc.run_incremental(pair.b)
        wc.run_incremental(pair.a)
        assert int(horizon(pair.oltp)) > int(window_start(copy))
        assert_refused(copy)
        assert copy_name not in consumers(pair.oltp), "a refused run does not report"
        wc.run_initial(copy)
        assert consumers(pair.oltp)[copy_name][0] == window_start(copy)
        pair.simulate()
        wc.run_incremental(copy)
        wc.run_incremental(pair.a)
        wc.assert_same_live_content(copy, pair.a, pair.oltp)
    finally:
        dbtools.drop_database(copy_name)
