"""A source with dirty rows: every row ends up loaded or quarantined with its reason."""

from __future__ import annotations

import psycopg
import pytest

from b2bdwh import generate

DIRTY_DEALS = [
    # opportunity_id, stage, engage, close, value: the hard-rule breakers first
    ("DIRTY001", "Negotiating", "2017-01-01", None, None),
    ("DIRTY002", "won", "2017-01-01", "2017-02-01", 100),
    ("DIRTY003", "Engaging", "9999-12-31", None, None),
    ("DIRTY004", "Lost", "2017-01-01", "0001-01-01", 0),
    ("DIRTY005", "Won", "2017-01-01", "2017-02-01", "NaN"),
    ("DIRTY006", "Won", "2017-01-01", "2017-02-01", 1e20),
    # soft-rule breakers: loaded, listed as data-quality issues
    ("SOFT0001", "Won", "2017-03-01", "2017-02-01", 500),
    ("SOFT0002", "Won", "2017-01-01", "2017-02-01", None),
    ("SOFT0003", "Lost", "2017-01-01", "2017-02-01", -20),
    ("SOFT0004", "Won", "2017-01-01", None, 700),
]
HARD = {
    "DIRTY001": "unknown deal stage 'Negotiating'",
    "DIRTY002": "unknown deal stage 'won'",
    "DIRTY003": "engage_date 9999-12-31 outside the accepted range",
    "DIRTY004": "close_date 0001-01-01 outside the accepted range",
    "DIRTY005": "close_value NaN cannot be stored",
    "DIRTY006": "close_value 100000000000000000000 cannot be stored",
}
SOFT = {
    ("SOFT0001", "close date before engage date"),
    ("SOFT0002", "won deal without a close value"),
    ("SOFT0003", "negative close value"),
    ("SOFT0004", "closed deal without a close date"),
}


@pytest.fixture(scope="module")
def dirty(warehouse):
    generate.generate(warehouse.oltp_dsn, 0.05)
    with psycopg.connect(warehouse.oltp_dsn) as conn:
        conn.execute(
            "INSERT INTO accounts (account_name, sector, revenue, employees)"
            " VALUES (repeat('Ünïcødé ☃ ', 500), '', -1, -5)"
        )
        for opp, stage, engage, close, value in DIRTY_DEALS:
            conn.execute(
                "INSERT INTO sales_pipeline (opportunity_id, sales_agent_id, product_id,"
                " account_id, deal_stage, engage_date, close_date, close_value)"
                " VALUES (%s, 1, 1, NULL, %s, %s, %s, %s::numeric)",
                (opp, stage, engage, close, None if value is None else str(value)),
            )
    with psycopg.connect(warehouse.olap_dsn, autocommit=True) as conn:
        conn.execute("CALL etl.run_initial_load()")
    return warehouse


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


def test_a_quarantined_record_keeps_the_source_row(dirty):
    with psycopg.connect(dirty.olap_dsn) as conn:
        record = conn.execute(
            "SELECT record FROM etl.error_log WHERE business_key = 'DIRTY003'"
        ).fetchone()[0]
    assert record["engage_date"] == "9999-12-31"
    assert record["deal_stage"] == "Engaging"
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
