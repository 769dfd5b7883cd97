"""A deal engaged in the future moves to the product version in effect at its engage date.

The contract: a fact's product key is the version in effect at the deal's engage date, at
all times. A deal engaged next year is loaded on the product's current version; when the
product then changes (a new SCD2 version valid from the change's time), the deal's engage
date falls in the new version's period, so the next incremental update moves its fact there
(old contribution out of the monthly aggregate, new one in). A deal engaged before the change
and a deal without an engage date stay where they are: a product change alone does not
rewrite them. Checked through `CALL etl.run_incremental_update()`, against the warehouse's own
rules (warehouse_compare.assert_consistent, etl.validate) and a fresh initial load.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate

NEXT_YEAR = date.today().year + 1
DEALS = [
    # opportunity_id, stage, engage date, close date, close value
    ("FUTURE-OPEN", "Engaging", date(NEXT_YEAR, 1, 15), None, None),
    ("FUTURE-WON", "Won", date(NEXT_YEAR, 2, 1), date(NEXT_YEAR, 3, 1), Decimal("1234.56")),
    # Closed before it was engaged (a mistyped date): found neither among the open deals nor
    # by its close date, but by the partial index of the close dates before engage dates.
    ("FUTURE-INVERTED", "Lost", date(NEXT_YEAR, 4, 1), date(NEXT_YEAR, 2, 1), Decimal("0")),
    # Deleted in the source while open (close date unknown): kept, marked deleted, and moved
    # like the others, so that history stays on the version in effect at its engage date.
    ("FUTURE-DELETED", "Engaging", date(NEXT_YEAR, 1, 20), None, None),
    ("PAST-WON", "Won", date(2017, 1, 10), date(2017, 2, 10), Decimal("10.00")),
    ("NO-ENGAGE", "Prospecting", None, None, None),
]
MOVING = {"FUTURE-OPEN", "FUTURE-WON", "FUTURE-INVERTED", "FUTURE-DELETED"}
DELETED = "FUTURE-DELETED"
MONTH = NEXT_YEAR * 10000 + 301  # FUTURE-WON's close month


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse):
    generate.generate(warehouse.oltp_dsn, 0.05)
    wc.run_initial(warehouse.olap_dsn)
    with psycopg.connect(warehouse.oltp_dsn, autocommit=True) as conn:
        for opp, stage, engage, close, value in DEALS:
            conn.execute(
                "INSERT INTO sales_pipeline (opportunity_id, sales_agent_id, product_id,"
                " account_id, deal_stage, engage_date, close_date, close_value)"
                " VALUES (%s, 1, 1, NULL, %s, %s, %s, %s)",
                (opp, stage, engage, close, value),
            )
    wc.run_incremental(warehouse.olap_dsn)
    assert wc.last_run(warehouse.olap_dsn)[2] == "succeeded"
    dbtools.execute(
        warehouse.oltp_dsn, "DELETE FROM sales_pipeline WHERE opportunity_id = %s", (DELETED,)
    )
    wc.run_incremental(warehouse.olap_dsn)
    assert wc.last_run(warehouse.olap_dsn)[2] == "succeeded"
    assert dbtools.scalar(
        warehouse.olap_dsn,
        "SELECT is_deleted FROM dwh.fact_sales_performance WHERE opportunity_id = %s",
        (DELETED,),
    )
    name, fresh = wc.attach_warehouse(warehouse.oltp_dsn, "future_fresh")
    yield warehouse, fresh
    dbtools.drop_database(name)


def product_keys(olap: str) -> dict[str, tuple]:
    """The deals' (product_key, list_price, run_id)."""
    return {
        r[0]: tuple(r[1:])
        for r in dbtools.query(
            olap,
            "SELECT opportunity_id, product_key, list_price, run_id"
            " FROM dwh.fact_sales_performance WHERE opportunity_id = ANY(%s)",
            ([d[0] for d in DEALS],),
        )
    }


def current_version(olap: str) -> tuple[int, Decimal]:
    return dbtools.query(
        olap,
        "SELECT product_key, sales_price FROM dwh.dim_product WHERE product_id = 1 AND is_current",
    )[0]


def test_future_deals_move_to_each_new_version_of_their_product(rig) -> None:
    warehouse, fresh = rig
    oltp, olap = warehouse.oltp_dsn, warehouse.olap_dsn
    first_key, first_price = current_version(olap)
    before = product_keys(olap)
    assert {k: v[:2] for k, v in before.items()} == {
        d[0]: (first_key, first_price) for d in DEALS
    }, "every deal starts on the product's current version"

    # Two price changes, each applied by its own incremental update: the future deals follow
    # each new version, the others stay.
    for step in (1, 2):
        dbtools.execute(
            oltp, "UPDATE products SET sales_price = sales_price + 100 WHERE product_id = 1"
        )
        wc.run_incremental(olap)
        run_id, _, status, message = wc.last_run(olap)
        assert status == "succeeded", message
        new_key, new_price = current_version(olap)
        assert new_key != first_key
        after = product_keys(olap)
        for opp, (key, price, written_by) in after.items():
            if opp in MOVING:
                assert (key, price, written_by) == (new_key, new_price, run_id), (step, opp)
            else:
                assert after[opp] == before[opp], f"{opp} must keep its version (step {step})"

        # Only the future deals were written (the move is the step's only update here) ...
        updated = dbtools.scalar(
            olap,
            "SELECT rows_updated FROM etl.loading_metadata"
            " WHERE run_id = %s AND step = 'dwh.load_fact_sales_performance'",
            (run_id,),
        )
        assert updated == len(MOVING)
        # ... and the aggregate followed them exactly: the won deal's group is on the new
        # version, none is left on the old ones.
        groups = dbtools.query(
            olap,
            "SELECT a.product_key, a.won_deals, a.lost_deals, a.won_value"
            " FROM dwh.fact_sales_monthly_aggregate AS a"
            " JOIN dwh.dim_product AS p USING (product_key)"
            " WHERE a.month_date_key = %s AND p.product_id = 1",
            (MONTH,),
        )
        assert groups == [(new_key, 1, 0, Decimal("1234.56"))]
        checks = dict(
            dbtools.query(
                olap,
                "SELECT check_name, passed FROM etl.validation_result WHERE run_id = %s",
                (run_id,),
            )
        )
        assert checks["deals engaged in a product version the run wrote are on it"] is True
        assert all(checks.values()), checks
        wc.assert_consistent(olap)

    wc.run_initial(fresh)
    assert wc.last_run(fresh)[2] == "succeeded"
    wc.assert_same_live_content(olap, fresh, oltp)


def test_validation_names_a_future_deal_left_on_an_old_version(rig) -> None:
    """The run's own check finds a deal that a new version should have taken over."""
    warehouse, _fresh = rig
    olap = warehouse.olap_dsn
    old_key = dbtools.scalar(
        olap,
        "SELECT product_key FROM dwh.dim_product WHERE product_id = 1 AND NOT is_current"
        " ORDER BY valid_from DESC LIMIT 1",
    )
    dbtools.execute(
        warehouse.oltp_dsn, "UPDATE products SET sales_price = sales_price + 1 WHERE product_id = 1"
    )
    wc.run_incremental(olap)
    run_id = wc.last_run(olap)[0]
    try:
        dbtools.execute(
            olap,
            "UPDATE dwh.fact_sales_performance SET product_key = %s"
            " WHERE opportunity_id = 'FUTURE-OPEN'",
            (old_key,),
        )
        checks = {
            r[0]: r[1:]
            for r in dbtools.query(
                olap, "SELECT check_name, passed, details FROM etl.validate(%s)", (run_id,)
            )
        }
        passed, details = checks["deals engaged in a product version the run wrote are on it"]
        assert passed is False
        assert [d["opportunity_id"] for d in details] == ["FUTURE-OPEN"]
    finally:
        dbtools.execute(
            olap,
            "UPDATE dwh.fact_sales_performance SET product_key = (SELECT product_key"
            " FROM dwh.dim_product WHERE product_id = 1 AND is_current)"
            " WHERE opportunity_id = 'FUTURE-OPEN'",
        )
