"""An incremental run killed at any point (pg_terminate_backend on the backend running it)
is followed by a plain `CALL etl.run_incremental_update()` that ends exactly where an
uninterrupted run ends, and applies nothing twice.

Three warehouses read one source: the one whose run is killed, a twin that runs the same
windows without interruption, and one that only does fresh initial loads. Each test starts
both incremental warehouses from an initial load of the same source state, commits a
workload of changes to the source, lets the twin run, runs the other one until it is killed
at the point under test (held there on an advisory lock, see warehouse_compare.PausePoint),
then runs it again. Then:
- the recovered warehouse equals its twin row for row, deleted rows, product history, the
  deal history and its as-of summaries included (surrogate keys translated, a product
  version being (product_id, valid_from));
- it shows the same live content as a fresh initial load, and as the source;
- its aggregate equals the recomputation from its facts, its SCD2 periods are sound;
- the run after the kill pulled the whole window again when the killed run had not applied
  it, and nothing when it had.

Workloads: `one_version` gives each product at most one SCD2 change in the window;
`two_versions` also changes one product's series and then its price in two transactions, a
new product twice, and one price back and forth inside a transaction (no version).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate

SCALE = 0.05  # 440 deals
BATCH = 50  # the fact step then takes one heap block per batch: several batches per window

# Where the run is killed: a step's start (after the steps before it committed), or inside
# a statement of a step (its transaction rolls back).
CRASH_POINTS: dict[str, Callable[[wc.PausePoint], wc.PausePoint]] = {
    # before the window is applied
    "during_pull_change_window": lambda p: p.on_statement("etl.change_window", "INSERT"),
    "after_pull_change_window": lambda p: p.at_step("dwh.load_dim_date"),
    "during_dim_product": lambda p: p.on_statement("dwh.dim_product", "INSERT"),
    "during_deal_history": lambda p: p.on_statement("dwh.fact_deal_history", "INSERT"),
    "after_dimensions": lambda p: p.at_step("dwh.load_deal_history"),
    "after_deal_history": lambda p: p.at_step("dwh.load_fact_sales_performance"),
    "during_fact_batches": lambda p: p.on_statement(
        "dwh.fact_sales_performance", "INSERT", from_call=2
    ),
    # while it is applied: the aggregate step's one transaction
    "during_aggregate": lambda p: p.on_statement("dwh.fact_sales_monthly_aggregate", "INSERT"),
    # after it is applied
    "after_aggregate": lambda p: p.at_step("etl.validate_run"),
    "before_finish": lambda p: p.at_step("etl.finish_run"),
}
APPLIED_BEFORE = {"after_aggregate", "before_finish"}

_ids = itertools.count(1)


@dataclass
class Rig:
    oltp: str
    crashing: str
    twin: str
    fresh: str


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    generate.generate(warehouse.oltp_dsn, SCALE)
    twin_name, twin = wc.attach_warehouse(warehouse.oltp_dsn, "crash_twin")
    fresh_name, fresh = wc.attach_warehouse(warehouse.oltp_dsn, "crash_fresh")
    # Each reports its own position to the source (the same name would let the one ahead
    # purge what the other has not applied yet).
    wc.set_config(twin, "consumer_name", "crash_twin")
    wc.set_config(fresh, "consumer_name", "crash_fresh")
    yield Rig(warehouse.oltp_dsn, warehouse.olap_dsn, twin, fresh)
    dbtools.drop_database(twin_name)
    dbtools.drop_database(fresh_name)


# --- workloads: committed source transactions ------------------------------------------------


def one_version(conn: psycopg.Connection) -> None:
    n = next(_ids)
    tx = conn.transaction
    with tx():  # a bulk correction: most windows' deals, several fact batches
        conn.execute(
            "UPDATE public.sales_pipeline SET close_value = close_value + 1"
            " WHERE deal_stage = 'Won'"
        )
    with tx():  # stage moves
        conn.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_date = DATE '2017-11-03',"
            " close_value = 4321.5, account_id = coalesce(account_id, 1)"
            " WHERE opportunity_id IN (SELECT opportunity_id FROM public.sales_pipeline"
            "  WHERE deal_stage = 'Engaging' ORDER BY opportunity_id LIMIT 3)"
        )
        conn.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Engaging',"
            " engage_date = DATE '2017-12-01'"
            " WHERE opportunity_id IN (SELECT opportunity_id FROM public.sales_pipeline"
            "  WHERE deal_stage = 'Prospecting' ORDER BY opportunity_id LIMIT 2)"
        )
    with tx():  # new deals
        conn.execute(
            "INSERT INTO public.sales_pipeline VALUES"
            " (%s, 3, 4, 1, 'Won', DATE '2017-05-02', DATE '2017-06-30', 3400),"
            " (%s, 5, 2, NULL, 'Prospecting', NULL, NULL, NULL)",
            (f"CRASH{n}A", f"CRASH{n}B"),
        )
    lost = conn.execute(
        "SELECT opportunity_id, sales_agent_id FROM public.sales_pipeline"
        " WHERE deal_stage = 'Lost' ORDER BY opportunity_id LIMIT 1"
    ).fetchone()
    with tx():  # a delete ...
        conn.execute("DELETE FROM public.sales_pipeline WHERE opportunity_id = %s", (lost[0],))
    with tx():  # ... and the key back, another deal now
        conn.execute(
            "INSERT INTO public.sales_pipeline VALUES"
            " (%s, %s, 6, 2, 'Won', DATE '2017-03-03', DATE '2017-04-04', 999.99)",
            (lost[0], lost[1] % 30 + 1),
        )
    with tx():  # one deal changed three times in one transaction
        deal = conn.execute(
            "SELECT opportunity_id FROM public.sales_pipeline WHERE deal_stage = 'Engaging'"
            " ORDER BY opportunity_id DESC LIMIT 1"
        ).fetchone()[0]
        conn.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_date = engage_date + 30,"
            " close_value = 100, account_id = coalesce(account_id, 2) WHERE opportunity_id = %s",
            (deal,),
        )
        conn.execute(
            "UPDATE public.sales_pipeline SET close_value = 150 WHERE opportunity_id = %s", (deal,)
        )
        conn.execute(
            "UPDATE public.sales_pipeline SET sales_agent_id = sales_agent_id %% 30 + 2"
            " WHERE opportunity_id = %s",
            (deal,),
        )
    with tx():  # SCD1
        conn.execute(
            "UPDATE public.accounts SET sector = %s, revenue = revenue + 1"
            " WHERE account_id = (SELECT min(account_id) FROM public.accounts)",
            (f"sector {n}",),
        )
        conn.execute(
            "UPDATE public.sales_agents SET manager_name = %s, regional_office = 'North'"
            " WHERE sales_agent_id = %s",
            (f"Manager {n}", n % 35 + 1),
        )
    with tx():  # SCD2: one version of product 1
        conn.execute(
            "UPDATE public.products SET sales_price = sales_price + 7 WHERE product_id = 1"
        )
    with tx():  # a new product and a deal on it
        conn.execute(
            "INSERT INTO public.products VALUES (%s, %s, 'NEW', 777)", (1000 + n, f"Crash {n}")
        )
        conn.execute(
            "INSERT INTO public.sales_pipeline VALUES"
            " (%s, 7, %s, 3, 'Lost', DATE '2017-08-08', DATE '2017-09-09', 0)",
            (f"CRASH{n}C", 1000 + n),
        )


def two_versions(conn: psycopg.Connection) -> None:
    one_version(conn)
    n = next(_ids)
    tx = conn.transaction
    with tx():
        conn.execute("UPDATE public.products SET series = %s WHERE product_id = 2", (f"S{n}",))
    with tx():
        conn.execute(
            "UPDATE public.products SET sales_price = sales_price + 1 WHERE product_id = 2"
        )
    with tx():  # back and forth in one transaction: no version
        conn.execute(
            "UPDATE public.products SET sales_price = sales_price + 5 WHERE product_id = 3"
        )
        conn.execute(
            "UPDATE public.products SET sales_price = sales_price - 5 WHERE product_id = 3"
        )
    with tx():  # the product one_version inserted, changed in a later transaction
        conn.execute(
            "UPDATE public.products SET sales_price = 778"
            " WHERE product_id = (SELECT max(product_id) FROM public.products)"
        )


WORKLOADS = {"one_version": one_version, "two_versions": two_versions}


# --- the test ---------------------------------------------------------------------------------


def changes_pulled(dsn: str, run_id: int) -> int:
    return wc.scalar(dsn, "SELECT changes_in_window FROM etl.run WHERE run_id = %s", (run_id,))


def run_and_kill(dsn: str, point: str) -> None:
    """An incremental run of the warehouse at dsn, killed at `point`."""
    pause = CRASH_POINTS[point](wc.PausePoint(dsn))
    try:
        pause.hold()
        run = wc.BackgroundCall(dsn, "CALL etl.run_incremental_update(%s)", (BATCH,))
        pid = pause.wait_until_paused(run)
        assert pid == run.pid
        pause.kill(pid)
        outcome = run.join()
    finally:
        pause.close()
    assert isinstance(outcome, psycopg.OperationalError), outcome
    assert wc.last_run(dsn)[2] == "running"  # nobody was left to mark it


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_killed_run_is_followed_by_one_that_ends_as_an_uninterrupted_run(
    rig: Rig, point: str, workload: str
) -> None:
    # Both incremental warehouses start from the same state of the source.
    wc.run_initial(rig.crashing)
    wc.run_initial(rig.twin)
    with psycopg.connect(rig.oltp, autocommit=True) as conn:
        WORKLOADS[workload](conn)
    wc.run_incremental(rig.twin, BATCH)
    twin_run = wc.last_run(rig.twin)[0]
    assert changes_pulled(rig.twin, twin_run) > 200

    run_and_kill(rig.crashing, point)
    killed_run = wc.last_run(rig.crashing)[0]

    wc.run_incremental(rig.crashing, BATCH)
    next_run, _pipeline, status, _message = wc.last_run(rig.crashing)
    assert status == "succeeded"
    assert wc.scalar(
        rig.crashing, "SELECT status FROM etl.run WHERE run_id = %s", (killed_run,)
    ) == ("failed")
    # The window is applied once: pulled again whole when the killed run had not applied
    # it, not at all when it had.
    expected = 0 if point in APPLIED_BEFORE else changes_pulled(rig.twin, twin_run)
    assert changes_pulled(rig.crashing, next_run) == expected

    wc.assert_same_exact_state(rig.crashing, rig.twin)
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.crashing, rig.fresh, rig.oltp)
    wc.assert_consistent(rig.crashing)


def test_runs_killed_twice_while_the_window_grows_end_as_one_uninterrupted_run(rig: Rig) -> None:
    """Killed after its dimensions, then (more changes committed meanwhile) the next run
    killed inside the aggregate step: the third run applies both workloads as one window."""
    wc.run_initial(rig.crashing)
    wc.run_initial(rig.twin)
    with psycopg.connect(rig.oltp, autocommit=True) as conn:
        two_versions(conn)
        run_and_kill(rig.crashing, "after_dimensions")
        two_versions(conn)
        run_and_kill(rig.crashing, "during_aggregate")
    wc.run_incremental(rig.twin, BATCH)
    wc.run_incremental(rig.crashing, BATCH)
    assert wc.last_run(rig.crashing)[2] == "succeeded"
    assert changes_pulled(rig.crashing, wc.last_run(rig.crashing)[0]) == changes_pulled(
        rig.twin, wc.last_run(rig.twin)[0]
    )
    wc.assert_same_exact_state(rig.crashing, rig.twin)
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.crashing, rig.fresh, rig.oltp)
    wc.assert_consistent(rig.crashing)
