"""The deal history (dwh.fact_deal_history) equals what a replay of the committed changes
gives (tests/history_oracle.py: the initial load's seed from the source's deals, then every
transaction of cdc.change_log in changed_at order), after an initial load, after windows
with deletes, re-inserts, a deal changed twice in one transaction and twice in one window,
a change of nothing tracked and an unstorable value; and a window applied again (the run
killed after the history step, before the aggregate step marked the window applied) adds no
row. Real server, real procedures; the source is generated at scale 0.05 (440 deals).
"""

from __future__ import annotations

import itertools

import psycopg
import pytest

import dbtools
import history_oracle as ho
import warehouse_compare as wc
from b2bdwh import generate

SCALE = 0.05
TAGS = itertools.count(1)


@pytest.fixture(scope="module")
def loaded(warehouse: dbtools.Warehouse) -> dict:
    generate.generate(warehouse.oltp_dsn, SCALE)
    wc.run_initial(warehouse.olap_dsn)
    return {"deals": ho.source_deals(warehouse.oltp_dsn)}


def assert_replayed(warehouse: dbtools.Warehouse, loaded: dict) -> None:
    expected = ho.expected_history(warehouse.oltp_dsn, warehouse.olap_dsn, loaded["deals"])
    problems = ho.history_differences(warehouse.olap_dsn, expected)
    assert not problems, "history differs from the replay:\n  " + "\n  ".join(problems)
    problems = ho.summary_differences(warehouse.olap_dsn)
    assert not problems, "summaries differ from the history:\n  " + "\n  ".join(problems)


def rows_of(dsn: str, deal: str) -> list[tuple]:
    return dbtools.query(
        dsn,
        """SELECT s.deal_stage_name, h.close_value, h.valid_to = 'infinity', h.entered_stage,
                  h.txid IS NULL
             FROM dwh.v_deal_history AS h JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
            WHERE h.opportunity_id = %s ORDER BY h.valid_from""",
        (deal,),
    )


def workload(conn: psycopg.Connection, tag: str) -> dict[str, str]:
    """Committed transactions of every shape the history cares about; returns the deals."""
    tx = conn.transaction

    def deal(stage: str, offset: int) -> str:
        return conn.execute(
            "SELECT opportunity_id FROM public.sales_pipeline WHERE deal_stage = %s"
            " ORDER BY opportunity_id LIMIT 1 OFFSET %s",
            (stage, offset),
        ).fetchone()[0]

    deals = {
        "twice_in_one_tx": deal("Engaging", 0),
        "twice_in_window": deal("Engaging", 1),
        "untracked": deal("Won", 0),
        "deleted": deal("Lost", 0),
        "back": deal("Lost", 1),
        "unstorable": deal("Engaging", 2),
        "new": f"H{tag}",
        "rewritten": deal("Prospecting", 0),
    }
    with tx():  # one transaction, two changes of one deal: one row
        conn.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_value = 100,"
            " close_date = engage_date + 10 WHERE opportunity_id = %s",
            (deals["twice_in_one_tx"],),
        )
        conn.execute(
            "UPDATE public.sales_pipeline SET close_value = 150 WHERE opportunity_id = %s",
            (deals["twice_in_one_tx"],),
        )
    with tx():  # ... then once more in the window: the transaction above is an earlier event
        conn.execute(
            "UPDATE public.sales_pipeline SET account_id = coalesce(account_id, 0) %% 3 + 1"
            " WHERE opportunity_id = %s",
            (deals["twice_in_one_tx"],),
        )
    with tx():  # two transactions in one window: two rows
        conn.execute(
            "UPDATE public.sales_pipeline SET sales_agent_id = sales_agent_id %% 30 + 1"
            " WHERE opportunity_id = %s",
            (deals["twice_in_window"],),
        )
    with tx():
        conn.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Lost', close_value = 0,"
            " close_date = engage_date + 3 WHERE opportunity_id = %s",
            (deals["twice_in_window"],),
        )
    with tx():  # nothing tracked: no row
        conn.execute(
            "UPDATE public.sales_pipeline SET close_date = close_date + 1"
            " WHERE opportunity_id = %s",
            (deals["untracked"],),
        )
    with tx():
        conn.execute(
            "DELETE FROM public.sales_pipeline WHERE opportunity_id IN (%s, %s)",
            (deals["deleted"], deals["back"]),
        )
    with tx():  # the key comes back, another deal now
        conn.execute(
            "INSERT INTO public.sales_pipeline VALUES"
            " (%s, 2, 3, 1, 'Prospecting', NULL, NULL, NULL), (%s, 4, 5, NULL, ' engaging ',"
            " DATE '2017-05-05', NULL, NULL)",
            (deals["back"], deals["new"]),
        )
    with tx():  # a value no column holds: quarantined, the history closes
        conn.execute(
            "UPDATE public.sales_pipeline SET close_value = 'NaN' WHERE opportunity_id = %s",
            (deals["unstorable"],),
        )
    with tx():  # a writable CTE deleting and inserting one key in one statement
        conn.execute(
            "WITH d AS (DELETE FROM public.sales_pipeline WHERE opportunity_id = %s RETURNING *)"
            " INSERT INTO public.sales_pipeline SELECT opportunity_id, sales_agent_id, product_id,"
            " account_id, 'Won', engage_date, engage_date + 5, 777 FROM d",
            (deals["rewritten"],),
        )
    return deals


def test_the_seed_is_what_the_source_knows(warehouse: dbtools.Warehouse, loaded: dict) -> None:
    assert_replayed(warehouse, loaded)
    # A closed deal engaged before it closed: Engaging, then its closed stage.
    won = dbtools.scalar(
        warehouse.oltp_dsn,
        "SELECT opportunity_id FROM public.sales_pipeline WHERE deal_stage = 'Won'"
        " AND engage_date < close_date ORDER BY 1 LIMIT 1",
    )
    rows = rows_of(warehouse.olap_dsn, won)
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        ("Engaging", False, True, True),
        ("Won", True, True, True),
    ]


def test_windows_replay_exactly(warehouse: dbtools.Warehouse, loaded: dict) -> None:
    with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
        deals = workload(conn, "a")
    before = {d: rows_of(warehouse.olap_dsn, d) for d in deals.values()}
    wc.run_incremental(warehouse.olap_dsn)
    assert wc.last_run(warehouse.olap_dsn)[2] == "succeeded"
    assert_replayed(warehouse, loaded)
    after = {d: rows_of(warehouse.olap_dsn, d) for d in deals.values()}
    assert len(after[deals["twice_in_one_tx"]]) == len(before[deals["twice_in_one_tx"]]) + 2
    assert after[deals["twice_in_one_tx"]][-2][:3] == ("Won", 150, False)
    assert len(after[deals["twice_in_window"]]) == len(before[deals["twice_in_window"]]) + 2
    assert after[deals["untracked"]] == before[deals["untracked"]]
    assert not any(r[2] for r in after[deals["deleted"]])  # closed, no current row
    assert after[deals["back"]][-1][:4] == ("Prospecting", None, True, True)
    assert after[deals["new"]] == [("Engaging", None, True, True, False)]
    assert not any(r[2] for r in after[deals["unstorable"]])

    # A second window over the first: the deleted deal comes back, the NaN is fixed.
    with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.sales_pipeline VALUES (%s, 1, 1, 1, 'Engaging',"
            " DATE '2017-01-01', NULL, NULL)",
            (deals["deleted"],),
        )
        conn.execute(
            "UPDATE public.sales_pipeline SET close_value = NULL WHERE opportunity_id = %s",
            (deals["unstorable"],),
        )
        workload(conn, "b")
    wc.run_incremental(warehouse.olap_dsn)
    assert wc.last_run(warehouse.olap_dsn)[2] == "succeeded"
    assert_replayed(warehouse, loaded)
    assert rows_of(warehouse.olap_dsn, deals["deleted"])[-1][2]  # back: a current row again


@pytest.mark.parametrize(
    "point",
    {
        "during_history": lambda p: p.on_statement("dwh.fact_deal_history", "INSERT"),
        "after_history": lambda p: p.at_step("dwh.load_fact_sales_performance"),
        "after_facts": lambda p: p.at_step("dwh.load_fact_sales_monthly_aggregate"),
        "during_aggregate": lambda p: p.on_statement("dwh.fact_sales_monthly_aggregate", "INSERT"),
    }.items(),
    ids=lambda item: item[0],
)
def test_a_killed_run_and_its_rerun_add_no_duplicate(
    warehouse: dbtools.Warehouse, loaded: dict, point
) -> None:
    _name, make_pause = point
    with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
        workload(conn, f"k{next(TAGS)}")
    pause = make_pause(wc.PausePoint(warehouse.olap_dsn))
    try:
        pause.hold()
        run = wc.BackgroundCall(warehouse.olap_dsn, "CALL etl.run_incremental_update()")
        pid = pause.wait_until_paused(run)
        pause.kill(pid)
        run.join()
    finally:
        pause.close()
    wc.run_incremental(warehouse.olap_dsn)
    assert wc.last_run(warehouse.olap_dsn)[2] == "succeeded"
    assert_replayed(warehouse, loaded)
    # Applied again, the window found its own rows: the counts of a single application.
    assert (
        dbtools.scalar(
            warehouse.olap_dsn,
            "SELECT count(*) FROM (SELECT opportunity_id FROM dwh.fact_deal_history"
            " WHERE valid_to = 'infinity' GROUP BY 1 HAVING count(*) > 1) AS d",
        )
        == 0
    )


def test_the_validation_names_a_history_that_disagrees_with_its_fact(
    warehouse: dbtools.Warehouse, loaded: dict
) -> None:
    with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
        deal = conn.execute(
            "UPDATE public.sales_pipeline SET close_value = coalesce(close_value, 0) + 1"
            " WHERE opportunity_id = (SELECT min(opportunity_id) FROM public.sales_pipeline"
            " WHERE deal_stage = 'Won') RETURNING opportunity_id"
        ).fetchone()[0]
    pause = wc.PausePoint(warehouse.olap_dsn).at_step("dwh.load_fact_sales_monthly_aggregate")
    try:
        pause.hold()
        run = wc.BackgroundCall(warehouse.olap_dsn, "CALL etl.run_incremental_update()")
        pid = pause.wait_until_paused(run)
        # While the run waits before the aggregate step: break the deal's current row.
        dbtools.execute(
            warehouse.olap_dsn,
            "UPDATE dwh.fact_deal_history SET close_value = close_value + 1000"
            " WHERE opportunity_id = %s AND valid_to = 'infinity'",
            (deal,),
        )
        assert pid
        pause.release()
        run.join()
    finally:
        pause.close()
    run_id, _pipeline, status, message = wc.last_run(warehouse.olap_dsn)
    assert status == "failed"
    assert "the deal history's current row agrees with the fact" in message
    details = dbtools.query(
        warehouse.olap_dsn,
        "SELECT passed, details FROM etl.validation_result WHERE run_id = %s"
        " AND check_name LIKE 'the deal history''s current row%%'",
        (run_id,),
    )
    assert details == [(False, [deal])]


# --- the as-of summaries' checks in etl.validate ----------------------------------------------

HISTORY_CHECKS = (
    "the deal history's as-of pipeline over all time equals the open pipeline,"
    " per stage and per product",
    "the deal history's as-of pipeline months equal the sums of their days",
    "the deal history's stage conversions are counts no larger than the entries they follow",
)
# Each tampering, in a transaction rolled back after, and the one check it must fail.
HISTORY_TAMPER = {
    "a day of the window's month": (
        "UPDATE dwh.deal_pipeline_day SET open_value = open_value + 1 WHERE (day, deal_stage_key,"
        " sales_agent_key, product_id) = (SELECT day, deal_stage_key, sales_agent_key, product_id"
        " FROM dwh.deal_pipeline_day WHERE day >= date_trunc('month', now() AT TIME ZONE 'UTC')"
        " ORDER BY 1, 2, 3, 4 LIMIT 1)",
        HISTORY_CHECKS[1],
    ),
    "a month (and so the totals)": (
        "UPDATE dwh.deal_pipeline_month SET deals = deals + 1 WHERE (month, deal_stage_key,"
        " sales_agent_key, product_id) = (SELECT month, deal_stage_key, sales_agent_key, product_id"
        " FROM dwh.deal_pipeline_month ORDER BY 1, 2, 3, 4 LIMIT 1)",
        HISTORY_CHECKS[0],
    ),
    "a conversion beyond its entries": (
        "UPDATE dwh.deal_stage_conversion AS t SET deals = e.deals + 1"
        " FROM dwh.deal_stage_conversion AS e"
        " WHERE (t.entry_month, t.from_stage_key, t.to_stage_key) = (SELECT entry_month,"
        " from_stage_key, to_stage_key FROM dwh.deal_stage_conversion WHERE to_stage_key"
        " <> from_stage_key ORDER BY 1, 2, 3 LIMIT 1) AND e.entry_month = t.entry_month"
        " AND e.from_stage_key = t.from_stage_key AND e.to_stage_key = t.from_stage_key",
        HISTORY_CHECKS[2],
    ),
}


@pytest.mark.parametrize("tampering", [None, *HISTORY_TAMPER])
def test_the_validation_checks_the_as_of_summaries(
    warehouse: dbtools.Warehouse, loaded: dict, tampering: str | None
) -> None:
    if tampering is None:  # first: a run whose window changes deals today
        with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
            workload(conn, f"v{next(TAGS)}")
        wc.run_incremental(warehouse.olap_dsn)
    run_id, pipeline, status, _ = wc.last_run(warehouse.olap_dsn)
    assert (pipeline, status) == ("incremental_update", "succeeded")
    with psycopg.connect(warehouse.olap_dsn) as conn:
        if tampering is not None:
            assert conn.execute(HISTORY_TAMPER[tampering][0]).rowcount == 1
        results = dict(
            conn.execute(
                "SELECT check_name, passed FROM etl.validate(%s) WHERE check_name = ANY (%s)",
                (run_id, list(HISTORY_CHECKS)),
            ).fetchall()
        )
        conn.rollback()
    failing = HISTORY_TAMPER[tampering][1] if tampering else None
    assert results == {check: check != failing for check in HISTORY_CHECKS}


def test_a_warehouse_loaded_before_the_history_gets_its_summaries_on_its_next_run(
    warehouse: dbtools.Warehouse, loaded: dict
) -> None:
    """Migrating a loaded warehouse to V0019 creates an empty history and empty as-of
    summaries while the seed (a view) already shows every deal: the next incremental run
    folds the seed in before its window (not deltas onto nothing), and validates."""
    name, upgraded = wc.attach_warehouse(warehouse.oltp_dsn, "history_upgraded")
    try:
        wc.run_initial(upgraded)
        dbtools.execute(
            upgraded,
            "TRUNCATE dwh.fact_deal_history, dwh.deal_pipeline_day, dwh.deal_pipeline_month,"
            " dwh.deal_stage_conversion",
        )
        with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
            workload(conn, f"u{next(TAGS)}")
        wc.run_incremental(upgraded)
        _run_id, _pipeline, status, message = wc.last_run(upgraded)
        assert status == "succeeded", message
        problems = ho.summary_differences(upgraded)
        assert not problems, "summaries differ from the history:\n  " + "\n  ".join(problems)
        assert dbtools.scalar(upgraded, "SELECT count(*) FROM dwh.deal_pipeline_day") > 0
    finally:
        dbtools.drop_database(name)
    wc.run_incremental(warehouse.olap_dsn)  # the module's warehouse takes the workload too


def test_a_window_across_a_price_change_puts_each_deal_on_its_version(
    warehouse: dbtools.Warehouse, loaded: dict
) -> None:
    """One window: a product's price changes (a new version from now on), a deal engaged
    years ago advances, and a deal engaged next year arrives. Each history row is on the
    version in effect at its deal's engage date, as the deal's fact is: the old one and the
    new one, both met within the window's engage dates."""
    tag = next(TAGS)
    with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
        old, product = conn.execute(
            "SELECT opportunity_id, product_id FROM public.sales_pipeline"
            " WHERE deal_stage = 'Engaging' AND engage_date IS NOT NULL AND product_id IS NOT NULL"
            " ORDER BY opportunity_id LIMIT 1 OFFSET 5"
        ).fetchone()
        new = f"HV{tag}"
        with conn.transaction():
            conn.execute(
                "UPDATE public.products SET sales_price = sales_price + 1 WHERE product_id = %s",
                (product,),
            )
        with conn.transaction():
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_value = 10,"
                " close_date = engage_date + 7 WHERE opportunity_id = %s",
                (old,),
            )
            conn.execute(
                "INSERT INTO public.sales_pipeline VALUES (%s, 2, %s, NULL, 'Engaging',"
                " make_date(extract(year FROM current_date)::integer + 1, 1, 10), NULL, NULL)",
                (new, product),
            )
    wc.run_incremental(warehouse.olap_dsn)
    assert wc.last_run(warehouse.olap_dsn)[2] == "succeeded"
    versions = dbtools.query(
        warehouse.olap_dsn,
        "SELECT h.opportunity_id, h.product_key, f.product_key, p.is_current"
        " FROM dwh.fact_deal_history AS h"
        " JOIN dwh.fact_sales_performance AS f USING (opportunity_id)"
        " JOIN dwh.dim_product AS p ON p.product_key = f.product_key"
        " WHERE h.valid_to = 'infinity' AND h.opportunity_id IN (%s, %s)",
        (new, old),
    )
    assert {deal: (history == fact, current) for deal, history, fact, current in versions} == {
        new: (True, True),  # engaged next year: the new version
        old: (True, False),  # engaged years ago: the version before it
    }
