"""The reporting views on a loaded warehouse agree with direct queries on the SOURCE tables,
after an initial load and an incremental update that deleted deals; each view is timed
(printed, never asserted)."""

from __future__ import annotations

import os
from decimal import Decimal

import psycopg
import pytest

import dbtools
from b2bdwh import reporting
from b2bdwh.generate import generate
from b2bdwh.simulate import simulate

SCALE = float(os.environ.get("B2B_REPORT_SCALE", "1"))


call = dbtools.execute
# What the product and account views count, straight from the source's deals `p` (NULL rows
# of a LEFT JOIN count nothing): deals, open, won, lost, won value.
DEAL_COUNTS = """count(p.*)::integer,
    count(p.*) FILTER (WHERE p.deal_stage IN ('Prospecting', 'Engaging'))::integer,
    count(p.*) FILTER (WHERE p.deal_stage = 'Won')::integer,
    count(p.*) FILTER (WHERE p.deal_stage = 'Lost')::integer,
    coalesce(sum(p.close_value) FILTER (WHERE p.deal_stage = 'Won'), 0)::numeric(18, 2)"""


@pytest.fixture(scope="module")
def loaded(warehouse: dbtools.Warehouse) -> dbtools.Warehouse:
    """Initial load, simulated CRM changes plus a few won deals deleted, incremental update."""
    generate(warehouse.oltp_dsn, SCALE)
    call(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    simulate(warehouse.oltp_dsn, 300, seed=11)
    call(
        warehouse.oltp_dsn,
        "DELETE FROM sales_pipeline WHERE opportunity_id IN (SELECT opportunity_id"
        " FROM sales_pipeline WHERE deal_stage = 'Won' ORDER BY opportunity_id LIMIT 5)",
    )
    call(warehouse.olap_dsn, "CALL etl.run_incremental_update()")
    return warehouse


def source(loaded: dbtools.Warehouse, sql_text: str) -> list[tuple]:
    return dbtools.query(loaded.oltp_dsn, sql_text)


def view(loaded: dbtools.Warehouse, sql_text: str) -> list[tuple]:
    return dbtools.query(loaded.olap_dsn, sql_text)


def test_the_incremental_run_deleted_deals_and_quarantined_nothing(loaded):
    [(status, pipeline)] = view(
        loaded, "SELECT status, pipeline FROM etl.run ORDER BY run_id DESC LIMIT 1"
    )
    assert (status, pipeline) == ("succeeded", "incremental_update")
    deleted = dbtools.scalar(
        loaded.olap_dsn, "SELECT count(*) FROM dwh.fact_sales_performance WHERE is_deleted"
    )
    assert deleted >= 5
    # Every source deal is a fact: the comparisons below may use the source as it is.
    quarantined = dbtools.scalar(
        loaded.olap_dsn, "SELECT count(*) FROM etl.error_log WHERE kind = 'quarantine'"
    )
    assert quarantined == 0


def test_sales_by_month_agrees_with_the_source(loaded):
    expected = source(
        loaded,
        """SELECT date_trunc('month', close_date)::date,
                  count(*) FILTER (WHERE deal_stage = 'Won'),
                  count(*) FILTER (WHERE deal_stage = 'Lost'),
                  coalesce(sum(close_value) FILTER (WHERE deal_stage = 'Won'), 0)::numeric(18, 2)
             FROM sales_pipeline WHERE deal_stage IN ('Won', 'Lost')
            GROUP BY 1 ORDER BY 1""",
    )
    actual = view(
        loaded,
        "SELECT month_start, won_deals, lost_deals, won_value FROM dwh.v_sales_by_month"
        " ORDER BY month_start",
    )
    assert actual == expected
    for _month, won, lost, _value, rate in view(
        loaded,
        "SELECT month_start, won_deals, lost_deals, won_value, win_rate FROM dwh.v_sales_by_month",
    ):
        assert rate == round(Decimal(won) / (won + lost), 4)


def test_agent_performance_agrees_with_the_source(loaded):
    expected = source(
        loaded,
        """SELECT a.sales_agent_name, a.manager_name, a.regional_office,
                  count(p.*) FILTER (WHERE p.deal_stage = 'Won')::integer,
                  count(p.*) FILTER (WHERE p.deal_stage = 'Lost')::integer,
                  coalesce(sum(p.close_value) FILTER (WHERE p.deal_stage = 'Won'), 0)
                      ::numeric(18, 2)
             FROM sales_agents a LEFT JOIN sales_pipeline p USING (sales_agent_id)
            GROUP BY a.sales_agent_id ORDER BY a.sales_agent_id""",
    )
    actual = view(
        loaded,
        "SELECT sales_agent_name, manager_name, regional_office, won_deals, lost_deals, won_value"
        " FROM dwh.v_agent_performance ORDER BY sales_agent_id",
    )
    assert actual == expected


def test_product_performance_agrees_with_the_source(loaded):
    expected = source(
        loaded,
        f"""SELECT r.product_id, r.product_name, r.sales_price, {DEAL_COUNTS}
             FROM products r LEFT JOIN sales_pipeline p USING (product_id)
            GROUP BY r.product_id ORDER BY r.product_id""",
    )
    actual = view(
        loaded,
        "SELECT product_id, product_name, current_list_price, deals, open_deals, won_deals,"
        " lost_deals, won_value FROM dwh.v_product_performance ORDER BY product_id",
    )
    assert actual == expected
    # The discount is measured against the list price of each deal's own version.
    [(direct,)] = view(
        loaded,
        """SELECT round(avg((v.sales_price - f.close_value) / v.sales_price), 4)
             FROM dwh.fact_sales_performance f JOIN dwh.dim_product v USING (product_key)
            WHERE f.is_won AND NOT f.is_deleted AND v.sales_price > 0 AND v.product_id = 1""",
    )
    assert view(
        loaded, "SELECT avg_discount_rate FROM dwh.v_product_performance WHERE product_id = 1"
    ) == [(direct,)]


def test_pipeline_by_stage_agrees_with_the_source(loaded):
    expected = source(
        loaded,
        """SELECT deal_stage, count(*)::integer,
                  count(*) FILTER (WHERE engage_date IS NULL)::integer,
                  min(engage_date)
             FROM sales_pipeline WHERE deal_stage IN ('Prospecting', 'Engaging')
            GROUP BY 1 ORDER BY 1 DESC""",
    )
    actual = view(
        loaded,
        "SELECT deal_stage_name, open_deals, deals_without_engage_date, oldest_engage_date"
        " FROM dwh.v_pipeline_by_stage ORDER BY stage_order",
    )
    assert actual == expected
    [(as_of, max_age, oldest)] = view(
        loaded,
        "SELECT as_of_date, max_age_days, oldest_engage_date FROM dwh.v_pipeline_by_stage"
        " WHERE deal_stage_name = 'Engaging'",
    )
    assert max_age == (as_of - oldest).days


def test_pipeline_median_and_mean_age_agree_with_postgres(loaded):
    """The view takes the median age from counts per engage day, not from the deals sorted:
    PostgreSQL's percentile_cont and avg over the same open deals must agree on the loaded
    pipeline, then on four and three deals engaged on different days (an even count, whose
    median falls between two ages, and an odd one); the changes are rolled back."""
    check = """
        SELECT v.median_age_days, v.avg_age_days, d.median, round(d.mean, 1)
          FROM dwh.v_pipeline_by_stage AS v,
               LATERAL (SELECT percentile_cont(0.5) WITHIN GROUP (
                                   ORDER BY v.as_of_date - e.full_date) AS median,
                               avg(v.as_of_date - e.full_date) AS mean
                          FROM dwh.fact_sales_performance AS f
                          JOIN dwh.dim_date AS e ON e.date_key = f.engage_date_key
                         WHERE f.deal_stage_key = v.deal_stage_key AND NOT f.is_closed
                           AND NOT f.is_deleted AND e.full_date IS NOT NULL) AS d
         WHERE v.deal_stage_name = 'Engaging'"""
    keep = """
        UPDATE dwh.fact_sales_performance AS f SET is_deleted = true
         WHERE NOT f.is_closed AND NOT f.is_deleted
           AND f.opportunity_id NOT IN (
               SELECT k.opportunity_id
                 FROM (SELECT DISTINCT ON (engage_date_key) opportunity_id, engage_date_key
                         FROM dwh.fact_sales_performance
                        WHERE NOT is_closed AND NOT is_deleted AND engage_date_key <> -1
                        ORDER BY engage_date_key, opportunity_id) AS k
                ORDER BY k.engage_date_key LIMIT %s)"""
    with psycopg.connect(loaded.olap_dsn) as conn:
        for deals in (None, 4, 3):
            if deals:
                conn.execute(keep, (deals,))
                # The view reads the summaries: rebuilt from the facts as they now are.
                conn.execute("SELECT dwh.build_summaries((SELECT max(run_id) FROM etl.run))")
            view_median, view_mean, median, mean = conn.execute(check).fetchone()
            assert (view_median, view_mean) == (median, mean), deals
        conn.rollback()


def test_account_performance_agrees_with_the_source(loaded):
    expected = source(
        loaded,
        f"""SELECT a.account_name, {DEAL_COUNTS}
             FROM accounts a LEFT JOIN sales_pipeline p USING (account_id)
            GROUP BY a.account_id ORDER BY a.account_id""",
    )
    actual = view(
        loaded,
        "SELECT account_name, deals, open_deals, won_deals, lost_deals, won_value"
        " FROM dwh.v_account_performance WHERE account_key <> -1 ORDER BY account_id",
    )
    assert actual == expected
    without_account = dbtools.scalar(
        loaded.oltp_dsn, "SELECT count(*) FROM sales_pipeline WHERE account_id IS NULL"
    )
    unknown = view(loaded, "SELECT deals FROM dwh.v_account_performance WHERE account_key = -1")
    assert unknown == ([(without_account,)] if without_account else [])


def test_deleted_deals_count_nowhere(loaded):
    live = dbtools.scalar(loaded.oltp_dsn, "SELECT count(*) FROM sales_pipeline")
    facts = dbtools.scalar(loaded.olap_dsn, "SELECT count(*) FROM dwh.fact_sales_performance")
    [(accounts, products)] = view(
        loaded,
        "SELECT (SELECT sum(deals) FROM dwh.v_account_performance),"
        " (SELECT sum(deals) FROM dwh.v_product_performance)",
    )
    assert facts > live
    assert accounts == products == live


def test_time_each_view(loaded, capsys):
    rows = dbtools.scalar(loaded.olap_dsn, "SELECT count(*) FROM dwh.fact_sales_performance")
    lines = [f"view timings over {rows:,} facts (scale {SCALE:g}), median of 5 runs:"]
    with psycopg.connect(loaded.olap_dsn) as conn:
        for name, t in reporting.time_views(conn).items():
            lines.append(
                f"  {name:<26} {t.median_ms:8.1f} ms"
                f"  (server {t.server_ms:6.1f} ms)  {t.rows:>6} rows"
            )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
