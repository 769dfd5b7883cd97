"""The summary tables (issue 13): product, account and open-pipeline summaries kept with the
monthly aggregate by the same exact deltas, and the reporting views that read them.

After an initial load and after incremental runs whose changes hit every way a group moves
(a deal deleted, closed, reopened, moved to another account, given an earlier engage date
than its account had, the last deal of an account's first or last day taken away, an
account's deals all deleted, a value quarantined, a product's new version, a deal without an
account), each summary equals its recomputation from the facts and each view over them equals
its definition over the facts (warehouse_compare.assert_consistent), etl.validate says so, and
a fresh initial load of the same source shows the same content. A summary row tampered with
is caught by etl.validate: whole on an initial load, in the refreshed groups (or, past the
recount budget, by the cross-check against the monthly aggregate) on an incremental run.
"""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate

SUMMARY_CHECKS = (
    "product summary equals its recomputation from the facts",
    "account summary equals its recomputation from the facts",
    "open pipeline summary equals its recomputation from the facts",
    "stage duration summary equals its recomputation from the facts",
    "summaries agree with each other and with the monthly aggregate",
)
REFRESHED_CHECKS = (
    "refreshed product summary groups equal their recomputation from the facts",
    "refreshed account summary groups equal their recomputation from the facts",
    "refreshed open pipeline summary groups equal their recomputation from the facts",
    "refreshed stage duration summary groups equal their recomputation from the facts",
    "summaries agree with each other and with the monthly aggregate",
)
VIEWS = ("dwh.v_product_performance", "dwh.v_account_performance", "dwh.v_pipeline_by_stage")


def checks(olap: str, run_id: int) -> dict[str, tuple]:
    return {
        r[0]: tuple(r[1:])
        for r in dbtools.query(
            olap,
            "SELECT check_name, passed, expected, actual FROM etl.validation_result"
            " WHERE run_id = %s",
            (run_id,),
        )
    }


def one_deal_extreme(olap: str, side: str, other: int = -1) -> tuple[int, str]:
    """(account_id, opportunity_id) of an account (not `other`) whose first engage day (side
    'first') or last close day ('last') holds exactly one live deal."""
    column, key = (
        ("first_engage_deals", "first_engage_key")
        if side == "first"
        else ("last_close_deals", "last_close_key")
    )
    fact_key = "engage_date_key" if side == "first" else "close_date_key"
    return dbtools.query(
        olap,
        f"""SELECT a.account_id, f.opportunity_id
              FROM dwh.fact_sales_account_summary AS s
              JOIN dwh.dim_account AS a USING (account_key)
              JOIN dwh.fact_sales_performance AS f
                ON f.account_key = s.account_key AND f.{fact_key} = s.{key} AND NOT f.is_deleted
             WHERE s.{column} = 1 AND s.account_key <> -1 AND s.deals > 2 AND s.{key} <> -1
               AND a.account_id <> %s
             ORDER BY a.account_id LIMIT 1""",
        (other,),
    )[0]


# What the first incremental run applies, besides the two extremes: {others} keeps every one
# of these changes off the accounts whose extreme day empties, so that no change brings them
# a day beyond it and the apply must recount them.
CHANGES = (
    # Open deals close (won), and one closes (lost) with an engage date earlier than any.
    """UPDATE sales_pipeline SET deal_stage = 'Won', close_date = engage_date + 20,
              close_value = 1000
        WHERE opportunity_id IN (SELECT opportunity_id FROM sales_pipeline
                                  WHERE deal_stage = 'Engaging' AND account_id IS NOT NULL
                                    AND {others} ORDER BY opportunity_id LIMIT 3)""",
    """UPDATE sales_pipeline SET deal_stage = 'Lost', engage_date = '2015-01-05',
              close_date = '2015-02-01', close_value = 0
        WHERE opportunity_id = (SELECT opportunity_id FROM sales_pipeline
                                 WHERE deal_stage = 'Engaging' AND account_id IS NOT NULL
                                   AND {others} ORDER BY opportunity_id DESC LIMIT 1)""",
    # Deals move to another account, and to no account (Unknown).
    """UPDATE sales_pipeline SET account_id = {receiver}
        WHERE opportunity_id IN (SELECT opportunity_id FROM sales_pipeline
                                  WHERE deal_stage = 'Won' AND account_id <> {receiver}
                                    AND {others} ORDER BY opportunity_id LIMIT 4)""",
    """UPDATE sales_pipeline SET account_id = NULL
        WHERE opportunity_id IN (SELECT opportunity_id FROM sales_pipeline
                                  WHERE deal_stage = 'Engaging' AND account_id IS NOT NULL
                                    AND {others} ORDER BY opportunity_id LIMIT 2)""",
    # A value corrected, a value no column holds (quarantined: its fact retires).
    """UPDATE sales_pipeline SET close_value = close_value + 17
        WHERE opportunity_id IN (SELECT opportunity_id FROM sales_pipeline
                                  WHERE deal_stage = 'Won' AND {others}
                                  ORDER BY opportunity_id DESC LIMIT 2)""",
    """UPDATE sales_pipeline SET close_value = 'NaN'
        WHERE opportunity_id = (SELECT opportunity_id FROM sales_pipeline
                                 WHERE deal_stage = 'Won' AND {others}
                                 ORDER BY opportunity_id DESC OFFSET 5 LIMIT 1)""",
    # New deals: an open one without an account, one engaged next year (it moves to the
    # product's next version in the second run).
    """INSERT INTO sales_pipeline (opportunity_id, sales_agent_id, product_id, account_id,
                                   deal_stage, engage_date, close_date, close_value)
       VALUES ('SUMMARY-NEW-1', 1, 2, NULL, 'Engaging', '2017-06-01', NULL, NULL),
              ('SUMMARY-FUTURE', 2, 3, {receiver}, 'Engaging', '{next_year}-01-10', NULL, NULL)""",
)


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse):
    olap, oltp = warehouse.olap_dsn, warehouse.oltp_dsn
    generate.generate(oltp, 0.3)
    wc.run_initial(olap)
    initial = wc.last_run(olap)
    assert initial[2] == "succeeded", initial
    before = {
        r[0]: r[1:]
        for r in dbtools.query(
            olap,
            "SELECT a.account_id, s.first_engage_key, s.last_close_key"
            " FROM dwh.fact_sales_account_summary s JOIN dwh.dim_account a USING (account_key)",
        )
    }
    first_account, first_deal = one_deal_extreme(olap, "first")
    last_account, last_deal = one_deal_extreme(olap, "last", first_account)
    [gone_account, receiver] = [
        r[0]
        for r in dbtools.query(
            oltp,
            "SELECT account_id FROM sales_pipeline WHERE account_id NOT IN (%s, %s)"
            " GROUP BY account_id ORDER BY count(*), account_id LIMIT 2",
            (first_account, last_account),
        )
    ]
    values = {
        "others": f"coalesce(account_id, -1) NOT IN ({first_account}, {last_account})",
        "receiver": receiver,
        "next_year": date.today().year + 1,
    }
    with psycopg.connect(oltp, autocommit=True) as conn:
        # The only deal on an account's first engage day goes: the day empties, none earlier.
        conn.execute("DELETE FROM sales_pipeline WHERE opportunity_id = %s", (first_deal,))
        # The only deal on an account's last close day reopens: it leaves that day.
        conn.execute(
            "UPDATE sales_pipeline SET deal_stage = 'Engaging', close_date = NULL,"
            " close_value = NULL WHERE opportunity_id = %s",
            (last_deal,),
        )
        # Every deal of an account goes: its summary row must go too.
        conn.execute("DELETE FROM sales_pipeline WHERE account_id = %s", (gone_account,))
        for statement in CHANGES:
            assert conn.execute(statement.format(**values)).rowcount > 0, statement
    wc.run_incremental(olap)
    first_incremental = wc.last_run(olap)
    assert first_incremental[2] == "succeeded", first_incremental
    with psycopg.connect(oltp, autocommit=True) as conn:
        conn.execute("UPDATE products SET sales_price = sales_price + 1 WHERE product_id = 3")
        conn.execute(
            "UPDATE sales_agents SET manager_name = 'Someone Else' WHERE sales_agent_id = 3"
        )
        # One deal closes: the run touches a stage duration group too.
        conn.execute(
            "UPDATE sales_pipeline SET deal_stage = 'Won', close_date = engage_date + 10,"
            " close_value = 10 WHERE opportunity_id = (SELECT min(opportunity_id)"
            " FROM sales_pipeline WHERE deal_stage = 'Engaging' AND engage_date IS NOT NULL)"
        )
    wc.run_incremental(olap)
    second_incremental = wc.last_run(olap)
    assert second_incremental[2] == "succeeded", second_incremental
    name, fresh = wc.attach_warehouse(oltp, "summaries_fresh")
    wc.run_initial(fresh)
    yield {
        "olap": olap,
        "oltp": oltp,
        "fresh": fresh,
        "runs": (initial[0], first_incremental[0], second_incremental[0]),
        "before": before,
        "first_account": first_account,
        "last_account": last_account,
        "gone_account": gone_account,
    }
    dbtools.drop_database(name)


def test_initial_load_validates_every_summary_whole(rig):
    results = checks(rig["olap"], rig["runs"][0])
    for name in SUMMARY_CHECKS:
        assert results[name][0], (name, results[name])


def test_incremental_runs_validate_the_refreshed_groups(rig):
    for run_id in rig["runs"][1:]:
        results = checks(rig["olap"], run_id)
        for name in REFRESHED_CHECKS:
            assert results[name][0], (run_id, name, results[name])
    refreshed = checks(rig["olap"], rig["runs"][1])
    # The groups were really recounted, not zero of them.
    for name in REFRESHED_CHECKS[:4]:
        assert not refreshed[name][1].startswith("0 differing of 0 "), refreshed[name]


def test_summaries_and_views_equal_their_recomputation(rig):
    wc.assert_consistent(rig["olap"])
    wc.assert_consistent(rig["fresh"])
    wc.assert_same_live_content(rig["olap"], rig["fresh"], rig["oltp"])


def test_the_account_view_shows_the_same_rows_as_a_fresh_load(rig):
    # (The product and pipeline views price deals by the product version they were engaged
    # under: an incremental warehouse keeps versions a fresh load never saw, so those two are
    # held to their definitions over the facts instead: assert_consistent.)
    query = (
        "SELECT account_id, account_name, sector, deals, open_deals, won_deals, lost_deals,"
        " won_value, win_rate, avg_days_to_close, first_engage_date, last_close_date"
        " FROM dwh.v_account_performance ORDER BY account_id NULLS FIRST"
    )
    assert dbtools.query(rig["olap"], query) == dbtools.query(rig["fresh"], query)


def test_account_extremes_move_and_empty_accounts_go(rig):
    olap = rig["olap"]
    after = {
        r[0]: r[1:]
        for r in dbtools.query(
            olap,
            "SELECT a.account_id, s.first_engage_key, s.last_close_key"
            " FROM dwh.fact_sales_account_summary s JOIN dwh.dim_account a USING (account_key)",
        )
    }
    # The first (last) day lost its only deal and no change brought one beyond it: the
    # extreme moved in, recounted from the account's facts (assert_consistent holds it equal).
    assert after[rig["first_account"]][0] > rig["before"][rig["first_account"]][0]
    assert after[rig["last_account"]][1] < rig["before"][rig["last_account"]][1]
    assert rig["gone_account"] not in after
    assert rig["gone_account"] in rig["before"]
    # An account whose deals are all gone still shows in the view, with zeros.
    [(deals, first, last)] = dbtools.query(
        olap,
        "SELECT deals, first_engage_date, last_close_date FROM dwh.v_account_performance"
        " WHERE account_id = %s",
        (rig["gone_account"],),
    )
    assert (deals, first, last) == (0, None, None)


def test_the_views_read_no_fact(rig):
    for view in VIEWS:
        plan = "\n".join(r[0] for r in dbtools.query(rig["olap"], f"EXPLAIN SELECT * FROM {view}"))
        assert "fact_sales_performance" not in plan, (view, plan)


# --- tampering: etl.validate must catch it --------------------------------------------------

TAMPER = {
    "product summary": "UPDATE dwh.fact_sales_product_summary SET discount_rate = discount_rate"
    " + 0.000001 WHERE product_key = (SELECT min(product_key) FROM"
    " dwh.fact_sales_product_summary WHERE product_key IN (SELECT product_key FROM {touched}))",
    "account summary": "UPDATE dwh.fact_sales_account_summary SET first_engage_deals ="
    " first_engage_deals + 1 WHERE account_key = (SELECT min(account_key) FROM"
    " dwh.fact_sales_account_summary WHERE first_engage_key IS NOT NULL"
    " AND account_key IN (SELECT account_key FROM {touched}))",
    "open pipeline summary": "UPDATE dwh.fact_sales_open_pipeline SET list_value = list_value + 1"
    " WHERE (deal_stage_key, engage_date_key) = (SELECT min(deal_stage_key), min(engage_date_key)"
    " FROM dwh.fact_sales_open_pipeline WHERE (deal_stage_key, engage_date_key) IN"
    " (SELECT deal_stage_key, engage_date_key FROM {touched}) GROUP BY deal_stage_key"
    " ORDER BY 1 LIMIT 1)",
    "stage duration summary": "UPDATE dwh.deal_stage_duration SET deals = deals + 1"
    " WHERE (close_month, sales_agent_key, product_id, days) = (SELECT close_month,"
    " sales_agent_key, product_id, days FROM dwh.deal_stage_duration WHERE"
    " (dwh.date_key(close_month), sales_agent_key, product_id) IN (SELECT close_month_key,"
    " sales_agent_key, product_id FROM {touched}) ORDER BY 1, 2, 3, 4 LIMIT 1)",
}
TOUCHED = {
    "product summary": "etl.touched_product",
    "account summary": "etl.touched_account",
    "open pipeline summary": "etl.touched_open_day",
    "stage duration summary": "etl.touched_duration",
}


def validate_tampered(olap: str, statement: str, run_id: int, settings: str = "") -> dict:
    """etl.validate(run_id) after `statement`, in a transaction rolled back after."""
    with psycopg.connect(olap) as conn:
        if settings:
            conn.execute(settings)
        assert conn.execute(statement).rowcount == 1, statement
        results = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT check_name, passed, actual FROM etl.validate(%s)", (run_id,)
            ).fetchall()
        }
        conn.rollback()
    return results


@pytest.mark.parametrize("summary", list(TAMPER))
def test_validate_catches_a_tampered_summary_row_on_the_initial_load(rig, summary):
    fresh = rig["fresh"]  # an initial load, nothing after it
    run_id, pipeline, status, _ = wc.last_run(fresh)
    assert (pipeline, status) == ("initial_load", "succeeded")
    facts = "(SELECT f.product_key, f.account_key, f.deal_stage_key, f.engage_date_key,"
    facts += " f.close_month_key, f.sales_agent_key, coalesce(p.product_id, -1) AS product_id"
    facts += " FROM dwh.fact_sales_performance AS f JOIN dwh.dim_product AS p USING (product_key))"
    facts += " AS f"
    results = validate_tampered(fresh, TAMPER[summary].format(touched=facts), run_id)
    for other in TAMPER:
        name = f"{other} equals its recomputation from the facts"
        assert results[name] == (
            (False, "1 differing groups") if other == summary else (True, "0 differing groups")
        )


@pytest.mark.parametrize("summary", list(TAMPER))
def test_validate_catches_a_tampered_refreshed_group(rig, summary):
    # The groups the latest run refreshed are kept, marked with it, for its validation.
    latest = rig["runs"][2]
    touched = f"(SELECT * FROM {TOUCHED[summary]} WHERE refreshed_by_run = {latest}) AS t"
    results = validate_tampered(rig["olap"], TAMPER[summary].format(touched=touched), latest)
    name = f"refreshed {summary} groups equal their recomputation from the facts"
    assert results[name] == (False, "1 differing"), results[name]


def test_the_cross_check_catches_what_the_recount_budget_leaves_out(rig):
    latest = rig["runs"][2]
    statement = (
        "UPDATE dwh.fact_sales_product_summary SET won_deals = won_deals + 1, deals = deals + 1"
        " WHERE product_key = (SELECT min(product_key) FROM dwh.fact_sales_product_summary"
        " WHERE won_deals > 0)"
    )
    results = validate_tampered(
        rig["olap"],
        statement,
        latest,
        "UPDATE etl.config SET value = '0' WHERE key = 'validation_recount_deals'",
    )
    assert results["refreshed product summary groups equal their recomputation from the facts"][0]
    assert results["summaries agree with each other and with the monthly aggregate"][0] is False


@pytest.mark.parametrize(
    "emptied",
    [
        # V0018 on a loaded warehouse: every summary of V0018 empty
        "dwh.fact_sales_product_summary, dwh.fact_sales_account_summary,"
        " dwh.fact_sales_open_pipeline",
        # V0022 (or V0020 on a warehouse loaded at V0018): the stage durations alone
        "dwh.deal_stage_duration",
    ],
    ids=["V0018", "V0022"],
)
def test_a_warehouse_loaded_before_the_summaries_gets_them_on_its_next_run(rig, emptied):
    """Migrating an existing warehouse to V0018 creates empty summaries, and V0022 empties the
    stage durations: the next incremental run builds them whole from the facts (not deltas
    onto nothing) and validates."""
    oltp = rig["oltp"]
    name, upgraded = wc.attach_warehouse(oltp, "summaries_upgraded")
    try:
        wc.run_initial(upgraded)
        dbtools.execute(upgraded, f"TRUNCATE {emptied}")
        with psycopg.connect(oltp, autocommit=True) as conn:
            conn.execute(
                "UPDATE sales_pipeline SET deal_stage = 'Won', close_date = engage_date + 30,"
                " close_value = 100 WHERE opportunity_id IN (SELECT opportunity_id FROM"
                " sales_pipeline WHERE deal_stage = 'Engaging' ORDER BY 1 LIMIT 5)"
            )
        wc.run_incremental(upgraded)
        run = wc.last_run(upgraded)
        assert run[2] == "succeeded", run
        wc.assert_consistent(upgraded)
        results = checks(upgraded, run[0])
        for check in REFRESHED_CHECKS:
            assert results[check][0], (check, results[check])
    finally:
        dbtools.drop_database(name)
