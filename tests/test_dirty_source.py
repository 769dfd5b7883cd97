"""A source with dirty rows: every row ends up loaded (an unresolved reference on the Unknown
member, listed as a data-quality issue) or, when no column can hold its value, quarantined
with its reason; an incremental update treats the same rows as the initial load does."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate

DIRTY_DEALS = [
    # opportunity_id, stage, engage, close, value: values no column holds first
    ("DIRTY005", "Won", "2017-01-01", "2017-02-01", "NaN"),
    ("DIRTY006", "Won", "2017-01-01", "2017-02-01", 1e20),
    # unresolved references and implausible values: loaded, listed as data-quality issues
    ("DIRTY001", "Negotiating", "2017-01-01", None, None),
    ("DIRTY002", "won", "2017-01-01", "2017-02-01", 100),
    ("DIRTY003", "Engaging", "9999-12-31", None, None),
    ("DIRTY004", "Lost", "2017-01-01", "0001-01-01", 0),
    ("DIRTY007", "Won ", "1989-12-31", "2017-02-01", 2e12),
    # soft-rule breakers: loaded, listed as data-quality issues
    ("SOFT0001", "Won", "2017-03-01", "2017-02-01", 500),
    ("SOFT0002", "Won", "2017-01-01", "2017-02-01", None),
    ("SOFT0003", "Lost", "2017-01-01", "2017-02-01", -20),
    ("SOFT0004", "Won", "2017-01-01", None, 700),
]
HARD = {
    "DIRTY005": "close_value NaN cannot be stored",
    "DIRTY006": "close_value 100000000000000000000 cannot be stored",
}
# opportunity_id: (stage, engage_date_key, close_date_key, close_value, is_won, is_closed)
UNKNOWN = {
    "DIRTY001": ("Unknown", 20170101, -1, None, False, False),
    "DIRTY002": ("Won", 20170101, 20170201, Decimal("100.00"), True, True),
    "DIRTY003": ("Engaging", -1, -1, None, False, False),
    "DIRTY004": ("Lost", 20170101, -1, Decimal("0.00"), False, True),
    "DIRTY007": ("Won", -1, 20170201, Decimal("2000000000000.00"), True, True),
}
ISSUES = {
    ("DIRTY001", "unknown deal stage"),
    ("DIRTY002", "deal stage read once trimmed and case-folded"),
    ("DIRTY003", "engage date outside the calendar"),
    ("DIRTY004", "close date outside the calendar"),
    ("DIRTY007", "deal stage read once trimmed and case-folded"),
    ("DIRTY007", "engage date outside the calendar"),
    ("DIRTY007", "close value above max_close_value"),
    # closed deals inserted without an account
    ("DIRTY002", "closed deal without an account"),
    ("DIRTY004", "closed deal without an account"),
    ("DIRTY007", "closed deal without an account"),
}
SOFT = {
    ("SOFT0001", "close date before engage date"),
    ("SOFT0002", "won deal without a close value"),
    ("SOFT0003", "negative close value"),
    ("SOFT0004", "closed deal without a close date"),
    *((f"SOFT000{i}", "closed deal without an account") for i in range(1, 5)),
}


def insert_dirty(oltp_dsn: str, prefix: str = "") -> None:
    with psycopg.connect(oltp_dsn) as conn:
        for opp, stage, engage, close, value in DIRTY_DEALS:
            conn.execute(
                "INSERT INTO sales_pipeline (opportunity_id, sales_agent_id, product_id,"
                " account_id, deal_stage, engage_date, close_date, close_value)"
                " VALUES (%s, 1, 1, NULL, %s, %s, %s, %s::numeric)",
                (prefix + opp, stage, engage, close, None if value is None else str(value)),
            )


@pytest.fixture(scope="module")
def dirty(warehouse):
    generate.generate(warehouse.oltp_dsn, 0.05)
    with psycopg.connect(warehouse.oltp_dsn) as conn:
        conn.execute(
            "INSERT INTO accounts (account_name, sector, revenue, employees)"
            " VALUES (repeat('Ünïcødé ☃ ', 500), '', -1, -5)"
        )
    insert_dirty(warehouse.oltp_dsn)
    with psycopg.connect(warehouse.olap_dsn, autocommit=True) as conn:
        conn.execute("CALL etl.run_initial_load()")
    return warehouse


UNKNOWN_FACTS = """
    SELECT f.opportunity_id, s.deal_stage_name, f.engage_date_key, f.close_date_key,
           f.close_value, f.is_won, f.is_closed
      FROM dwh.fact_sales_performance AS f JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
     WHERE f.opportunity_id LIKE %s AND NOT f.is_deleted"""


def test_every_source_row_is_loaded_or_quarantined(dirty):
    with psycopg.connect(dirty.oltp_dsn) as conn:
        source = conn.execute("SELECT count(*) FROM sales_pipeline").fetchone()[0]
    with psycopg.connect(dirty.olap_dsn) as conn:
        loaded = conn.execute("SELECT count(*) FROM dwh.fact_sales_performance").fetchone()[0]
        quarantined = dict(
            conn.execute(
                "SELECT business_key, message FROM etl.error_log WHERE kind = 'quarantine'"
            ).fetchall()
        )
    assert loaded + len(quarantined) == source
    assert set(quarantined) == set(HARD)
    for key, reason in HARD.items():
        assert quarantined[key].startswith(reason), (key, quarantined[key])


def test_unresolved_references_point_at_unknown_and_are_listed(dirty):
    """An unknown stage, a date outside the calendar: the Unknown member (-1), the deal live
    and counted where its stage allows; a stage differing in case or spacing resolves; a value
    above max_close_value is loaded as is. Each is a data-quality issue naming the value."""
    facts = {r[0]: tuple(r[1:]) for r in dbtools.query(dirty.olap_dsn, UNKNOWN_FACTS, ("DIRTY%",))}
    assert facts == UNKNOWN
    issues = dbtools.query(
        dirty.olap_dsn,
        "SELECT business_key, rule, record ->> 'detail' FROM etl.data_quality_issue"
        " WHERE business_key LIKE 'DIRTY%%'",
    )
    assert {(k, rule) for k, rule, _ in issues} == ISSUES
    details = {(k, rule): detail for k, rule, detail in issues}
    assert "'Negotiating'" in details["DIRTY001", "unknown deal stage"]
    assert "9999-12-31" in details["DIRTY003", "engage date outside the calendar"]
    assert "2000000000000" in details["DIRTY007", "close value above max_close_value"]
    # The unknown-stage deal is neither won nor lost; the others count in the aggregate.
    won_value = dbtools.scalar(
        dirty.olap_dsn,
        "SELECT sum(won_value) FROM dwh.fact_sales_monthly_aggregate AS a"
        " JOIN dwh.dim_product AS p USING (product_key) WHERE a.month_date_key = 20170201"
        " AND p.product_id = 1 AND a.sales_agent_key = (SELECT sales_agent_key"
        " FROM dwh.dim_sales_agent WHERE sales_agent_id = 1)",
    )
    assert won_value >= Decimal("2000000000100.00")


def test_a_quarantined_record_keeps_the_source_row(dirty):
    with psycopg.connect(dirty.olap_dsn) as conn:
        record = conn.execute(
            "SELECT record FROM etl.error_log WHERE business_key = 'DIRTY006'"
        ).fetchone()[0]
    assert record["close_value"] == 1e20
    assert record["deal_stage"] == "Won"
    assert record["sales_agent_id"] == 1


def test_soft_rule_breakers_load_and_are_listed(dirty):
    with psycopg.connect(dirty.olap_dsn) as conn:
        issues = set(
            conn.execute(
                "SELECT business_key, rule FROM etl.data_quality_issue"
                " WHERE business_key LIKE 'SOFT%'"
            ).fetchall()
        )
        loaded = conn.execute(
            "SELECT count(*) FROM dwh.fact_sales_performance WHERE opportunity_id LIKE 'SOFT%'"
        ).fetchone()[0]
        days = conn.execute(
            "SELECT days_to_close FROM dwh.fact_sales_performance WHERE opportunity_id = 'SOFT0001'"
        ).fetchone()[0]
    assert issues == SOFT
    assert loaded == 4
    assert days == -28


def test_dim_date_stays_bounded_and_validation_passes(dirty):
    with psycopg.connect(dirty.olap_dsn) as conn:
        first, last, days = conn.execute(
            "SELECT min(full_date), max(full_date), count(*) FROM dwh.dim_date WHERE date_key <> -1"
        ).fetchone()
        failed = conn.execute(
            "SELECT count(*) FROM etl.validation_result WHERE NOT passed"
        ).fetchone()[0]
        status = conn.execute("SELECT status FROM etl.run").fetchone()[0]
    assert first.year >= 2015 and last.year <= 2019
    assert days < 3 * 366 + 500
    assert failed == 0
    assert status == "succeeded"


def test_closed_deals_without_account_or_close_date_point_at_unknown(dirty):
    with psycopg.connect(dirty.olap_dsn) as conn:
        account_key, close_date_key = conn.execute(
            "SELECT account_key, close_date_key FROM dwh.fact_sales_performance"
            " WHERE opportunity_id = 'SOFT0004'"
        ).fetchone()
        month = conn.execute(
            "SELECT won_deals FROM dwh.fact_sales_monthly_aggregate WHERE month_date_key = -1"
        ).fetchone()
    assert (account_key, close_date_key) == (-1, -1)
    assert month == (1,)


def test_odd_attribute_values_reach_the_dimension_unchanged(dirty):
    with psycopg.connect(dirty.olap_dsn) as conn:
        name, revenue, employees = conn.execute(
            "SELECT account_name, revenue, employees FROM dwh.dim_account"
            " WHERE account_name LIKE 'Ünïcødé%'"
        ).fetchone()
    assert len(name) == 5000 and revenue == -1 and employees == -5


def test_an_incremental_update_treats_dirty_rows_as_the_initial_load_does(dirty):
    """The same rows inserted later reach the warehouse through an incremental update: the
    same facts, issues and quarantine, and the same live content as a fresh initial load."""
    insert_dirty(dirty.oltp_dsn, prefix="INC")
    wc.run_incremental(dirty.olap_dsn)
    assert wc.last_run(dirty.olap_dsn)[2] == "succeeded"
    run_id = wc.last_run(dirty.olap_dsn)[0]
    facts = {
        r[0].removeprefix("INC"): tuple(r[1:])
        for r in dbtools.query(dirty.olap_dsn, UNKNOWN_FACTS, ("INCDIRTY%",))
    }
    assert facts == UNKNOWN
    issues = dbtools.query(
        dirty.olap_dsn,
        "SELECT business_key, rule FROM etl.data_quality_issue WHERE run_id = %s"
        " AND business_key LIKE 'INCDIRTY%%'",
        (run_id,),
    )
    assert {(k.removeprefix("INC"), rule) for k, rule in issues} == ISSUES
    quarantined = dbtools.query(
        dirty.olap_dsn,
        "SELECT business_key FROM etl.error_log WHERE kind = 'quarantine' AND run_id = %s",
        (run_id,),
    )
    assert {k.removeprefix("INC") for (k,) in quarantined} == set(HARD)
    name, fresh = wc.attach_warehouse(dirty.oltp_dsn, "dirty_fresh")
    try:
        wc.run_initial(fresh)
        assert wc.last_run(fresh)[2] == "succeeded"
        wc.assert_same_live_content(dirty.olap_dsn, fresh, dirty.oltp_dsn)
        wc.assert_consistent(dirty.olap_dsn)
    finally:
        dbtools.drop_database(name)
