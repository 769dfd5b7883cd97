"""Comparing warehouses by business keys: shared by the tests (tests/warehouse_compare.py)
and the soak run (bench/soak.py).

- `live_content`: what a user sees of the source through a warehouse: the current
  attributes of live dimension members by business key, every live fact by
  opportunity_id (dimension keys translated to business keys, the product by
  product_id; an archived deal with when it was archived), the monthly aggregate summed per
  (month, agent, product_id).
  Surrogate keys and the choice of product version are left out, so an
  incrementally maintained warehouse and a fresh initial load of the same
  source must agree on it exactly. `source_content` computes the same view
  straight from the source tables.
- `consistency_problems`: rules an incrementally maintained warehouse must keep
  on its own (the aggregate and every summary equal their recomputation from
  the facts, the reporting views over the summaries equal their definitions
  over the facts, SCD2
  periods, the product version a fact resolves to, no live fact on a deleted
  member).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal

import psycopg

# Deal stages the warehouse knows. A source stage resolves to one of them by name, else once
# trimmed and case-folded (as the CSV importer matches names); any other stage is the Unknown
# stage: the deal is a live fact, neither won nor lost.
KNOWN_STAGES = ("Prospecting", "Engaging", "Won", "Lost")
# The calendar: etl.config's date_min .. date_max as the migrations set them. A date outside
# it is the Unknown date (-1).
CALENDAR = ("1990-01-01", "2099-12-31")

# --- the live content: what a fresh initial load must agree on -------------------------------


@dataclass
class Content:
    """A warehouse (or the source) as business keys and attributes."""

    accounts: dict[int, tuple]
    agents: dict[int, tuple]
    products: dict[int, tuple]  # current version of each live product: name, series, price
    facts: dict[str, tuple]
    aggregate: dict[tuple, tuple]  # (month key, agent id, product id) -> won, lost, won value


FACT_COLUMNS = (
    "account_id",
    "product_id",
    "sales_agent_id",
    "deal_stage",
    "engage_date_key",
    "close_date_key",
    "close_month_key",
    "close_value",
    "is_won",
    "is_closed",
    "days_to_close",
    "archived_at",
)

LIVE_QUERIES = {
    "accounts": """
        SELECT account_id, account_name, sector, year_established, revenue, employees,
               office_location, parent_account_id
          FROM dwh.dim_account WHERE account_key <> -1 AND NOT is_deleted""",
    "agents": """
        SELECT sales_agent_id, sales_agent_name, manager_name, regional_office
          FROM dwh.dim_sales_agent WHERE sales_agent_key <> -1 AND NOT is_deleted""",
    "products": """
        SELECT product_id, product_name, series, sales_price
          FROM dwh.dim_product WHERE product_key <> -1 AND is_current AND NOT is_deleted""",
    "facts": """
        SELECT f.opportunity_id, a.account_id, p.product_id, g.sales_agent_id, st.deal_stage_name,
               f.engage_date_key, f.close_date_key, f.close_month_key, f.close_value, f.is_won,
               f.is_closed, f.days_to_close, f.archived_at
          FROM dwh.fact_sales_performance AS f
          JOIN dwh.dim_account AS a USING (account_key)
          JOIN dwh.dim_product AS p USING (product_key)
          JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
          JOIN dwh.dim_deal_stage AS st USING (deal_stage_key)
         WHERE NOT f.is_deleted""",
    "aggregate": """
        SELECT m.month_date_key, g.sales_agent_id, p.product_id, sum(m.won_deals)::integer,
               sum(m.lost_deals)::integer, sum(m.won_value)
          FROM dwh.fact_sales_monthly_aggregate AS m
          JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
          JOIN dwh.dim_product AS p USING (product_key)
         GROUP BY 1, 2, 3""",
}

# The source's deals as they are: sales_pipeline's and the archive's (closed deals the CRM
# archived: live, with when, archived_at); a key in both is sales_pipeline's.
SOURCE_DEAL_ROWS = """
    SELECT l.*, NULL::timestamptz AS archived_at FROM public.sales_pipeline AS l
    UNION ALL
    SELECT a.* FROM public.sales_pipeline_archive AS a
     WHERE NOT EXISTS (SELECT FROM public.sales_pipeline AS l
                        WHERE l.opportunity_id = a.opportunity_id)"""

# What the warehouse makes of each source deal: its stage resolved (Unknown when it does not
# resolve), its dates within the calendar (NULL, that is Unknown, outside it), its close value
# in cents. A deal whose value no column holds (NaN, infinite, beyond numeric(18, 2)) is
# quarantined: no fact.
SOURCE_DEALS = f"""
    SELECT p.opportunity_id, p.account_id, p.product_id, p.sales_agent_id,
           coalesce(st.name, 'Unknown') AS deal_stage,
           coalesce(st.is_won, false) AS is_won, coalesce(st.is_closed, false) AS is_closed,
           CASE WHEN p.engage_date BETWEEN '{CALENDAR[0]}' AND '{CALENDAR[1]}'
                THEN p.engage_date END AS engage_date,
           CASE WHEN p.close_date BETWEEN '{CALENDAR[0]}' AND '{CALENDAR[1]}'
                THEN p.close_date END AS close_date,
           round(p.close_value, 2) AS close_value, p.archived_at
      FROM ({SOURCE_DEAL_ROWS}) AS p
      LEFT JOIN (VALUES ('Prospecting', false, false), ('Engaging', false, false),
                        ('Won', true, true), ('Lost', true, false)) AS st (name, is_closed, is_won)
        ON lower(st.name)
           = regexp_replace(lower(normalize(p.deal_stage, NFKC)), '[^[:alnum:]]+', '', 'g')
     WHERE NOT coalesce(p.close_value = 'NaN' OR abs(round(p.close_value, 2)) >= 1e16, false)"""

# The same view computed from the source tables.
SOURCE_QUERIES = {
    "accounts": """
        SELECT account_id, account_name, sector, year_established, revenue, employees,
               office_location, parent_account_id
          FROM public.accounts""",
    "agents": "SELECT sales_agent_id, sales_agent_name, manager_name, regional_office"
    " FROM public.sales_agents",
    "products": "SELECT product_id, product_name, series, sales_price FROM public.products",
    "facts": f"""
        SELECT opportunity_id, account_id, product_id, sales_agent_id, deal_stage,
               coalesce(to_char(engage_date, 'YYYYMMDD')::integer, -1),
               coalesce(to_char(close_date, 'YYYYMMDD')::integer, -1),
               coalesce(to_char(date_trunc('month', close_date), 'YYYYMMDD')::integer, -1),
               close_value, is_won, is_closed, close_date - engage_date, archived_at
          FROM ({SOURCE_DEALS}) AS deal""",
    "aggregate": f"""
        SELECT coalesce(to_char(date_trunc('month', close_date), 'YYYYMMDD')::integer, -1),
               sales_agent_id, product_id,
               count(*) FILTER (WHERE is_won)::integer,
               count(*) FILTER (WHERE NOT is_won)::integer,
               coalesce(sum(close_value) FILTER (WHERE is_won), 0)
          FROM ({SOURCE_DEALS}) AS deal
         WHERE is_closed
         GROUP BY 1, 2, 3""",
}


def content_of(dsn: str, queries: dict[str, str]) -> Content:
    """Runs each named query; its rows keyed by business key (the aggregate by its first three
    columns), as a Content."""
    with psycopg.connect(dsn) as conn:
        parts: dict[str, dict] = {}
        for name, query in queries.items():
            rows = conn.execute(query).fetchall()
            if name == "aggregate":
                parts[name] = {tuple(r[:3]): tuple(r[3:]) for r in rows}
            else:
                parts[name] = {r[0]: tuple(r[1:]) for r in rows}
    return Content(**parts)


def live_content(olap_dsn: str) -> Content:
    return content_of(olap_dsn, LIVE_QUERIES)


def source_content(oltp_dsn: str) -> Content:
    return content_of(oltp_dsn, SOURCE_QUERIES)


def _show(value: object) -> str:
    return repr(value) if not isinstance(value, Decimal) else str(value)


def dict_differences(
    what: str, actual: dict, expected: dict, *, labels: tuple[str, str], limit: int = 8
) -> list[str]:
    """Readable differences between two keyed dicts (numbers compare by value)."""
    out: list[str] = []
    missing = sorted((k for k in expected if k not in actual), key=str)
    extra = sorted((k for k in actual if k not in expected), key=str)
    differ = sorted((k for k in expected if k in actual and actual[k] != expected[k]), key=str)
    a_label, e_label = labels
    if missing:
        out.append(
            f"{what}: {len(missing)} in {e_label} but not in {a_label}: "
            + ", ".join(f"{k!r}={expected[k]!r}" for k in missing[:limit])
        )
    if extra:
        out.append(
            f"{what}: {len(extra)} in {a_label} but not in {e_label}: "
            + ", ".join(f"{k!r}={actual[k]!r}" for k in extra[:limit])
        )
    for k in differ[:limit]:
        out.append(f"{what} {k!r}: {a_label} {actual[k]!r} != {e_label} {expected[k]!r}")
    if len(differ) > limit:
        out.append(f"{what}: ... {len(differ) - limit} more differing")
    return out


def content_differences(
    actual: Content, expected: Content, labels: tuple[str, str] = ("incremental", "fresh load")
) -> list[str]:
    out: list[str] = []
    for f in fields(Content):
        out += dict_differences(
            f.name, getattr(actual, f.name), getattr(expected, f.name), labels=labels
        )
    return out


# --- rules the incremental warehouse keeps on its own ---------------------------------------


# The summaries (issue 13): (name, table, its recomputation from the facts, the columns
# compared). The reporting views that read them are checked against the source itself
# (tests/test_reporting_views.py).
SUMMARIES = (
    (
        "product summary",
        "dwh.fact_sales_product_summary",
        "dwh.product_summary_from_facts",
        "product_key, deals, open_deals, won_deals, lost_deals, won_value, won_list_value,"
        " won_listed_deals, discounted_deals, discount, discount_rate, priced_won_value,"
        " priced_list_value",
    ),
    (
        "account summary",
        "dwh.fact_sales_account_summary",
        "dwh.account_summary_from_facts",
        "account_key, deals, open_deals, won_deals, lost_deals, won_value, won_days,"
        " won_timed_deals, first_engage_key, first_engage_deals, last_close_key, last_close_deals",
    ),
    (
        "open pipeline summary",
        "dwh.fact_sales_open_pipeline",
        "dwh.open_pipeline_from_facts",
        "deal_stage_key, engage_date_key, open_deals, list_value",
    ),
    (
        "stage duration summary",
        "dwh.deal_stage_duration",
        "dwh.stage_duration_from_facts",
        "close_month, sales_agent_key, product_id, days, deals",
    ),
)
CONSISTENCY_CHECKS = {
    # The aggregate is exactly the closed, live facts counted per group: a group applied
    # twice, missed or left behind shows here.
    "aggregate row differs from its recomputation from the facts": """
        WITH recomputed AS (
            SELECT close_month_key AS month_date_key, sales_agent_key, product_key,
                   count(*) FILTER (WHERE is_won)::integer AS won_deals,
                   count(*) FILTER (WHERE NOT is_won)::integer AS lost_deals,
                   coalesce(sum(close_value) FILTER (WHERE is_won), 0) AS won_value
              FROM dwh.fact_sales_performance
             WHERE is_closed AND NOT is_deleted
             GROUP BY 1, 2, 3
        )
        SELECT coalesce(a.month_date_key, r.month_date_key),
               coalesce(a.sales_agent_key, r.sales_agent_key),
               coalesce(a.product_key, r.product_key),
               (a.won_deals, a.lost_deals, a.won_value)::text AS stored,
               (r.won_deals, r.lost_deals, r.won_value)::text AS recomputed
          FROM dwh.fact_sales_monthly_aggregate AS a
          FULL JOIN recomputed AS r
            ON (r.month_date_key, r.sales_agent_key, r.product_key)
             = (a.month_date_key, a.sales_agent_key, a.product_key)
         WHERE (a.won_deals, a.lost_deals, a.won_value)
               IS DISTINCT FROM (r.won_deals, r.lost_deals, r.won_value)""",
    # Each summary is exactly its recomputation from the facts (issue 13).
    **{
        f"{name} row differs from its recomputation from the facts": f"""
        SELECT 'stored' AS side, x.* FROM (
            SELECT {columns} FROM {table} EXCEPT SELECT {columns} FROM {recomputation}) AS x
        UNION ALL
        SELECT 'recomputed', x.* FROM (
            SELECT {columns} FROM {recomputation} EXCEPT SELECT {columns} FROM {table}) AS x"""
        for name, table, recomputation, columns in SUMMARIES
    },
    # One fact per opportunity across the facts' two parts (the key holds within each).
    "opportunity with a fact in both the hot and the cold part": """
        SELECT opportunity_id, count(*) FROM dwh.fact_sales_performance
         GROUP BY 1 HAVING count(*) > 1""",
    # Every fact where the horizon in force places it, once the run that set the horizon
    # (an initial load or a horizon move) has finished: an interrupted move leaves some.
    "fact stored in the other part than the horizon places it": """
        WITH horizon AS MATERIALIZED (
            -- (a CTE: on Citus the facts are distributed and these tables local)
            SELECT s.cold_before
              FROM etl.fact_storage AS s
             WHERE s.run_id IS NULL
                OR EXISTS (SELECT 1 FROM etl.run AS r
                            WHERE r.run_id = s.run_id AND r.status = 'succeeded')
        )
        SELECT f.opportunity_id, f.is_cold, f.is_closed, f.close_date_key, h.cold_before::text
          FROM dwh.fact_sales_performance AS f
         CROSS JOIN horizon AS h
         WHERE f.is_cold <> dwh.is_cold_fact(f.is_closed, f.close_date_key, h.cold_before)""",
    "product version with an empty or reversed period": """
        SELECT product_key, product_id, valid_from::text, valid_to::text
          FROM dwh.dim_product WHERE product_key <> -1 AND NOT valid_from < valid_to""",
    "product with more than one current version": """
        SELECT product_id, count(*) FROM dwh.dim_product
         WHERE product_key <> -1 AND is_current GROUP BY 1 HAVING count(*) > 1""",
    "current version marked deleted": """
        SELECT product_key, product_id FROM dwh.dim_product WHERE is_current AND is_deleted""",
    # Versions follow each other without gaps, except after a delete.
    "product versions not contiguous (and not after a delete)": """
        SELECT product_id, product_key, valid_to::text, next_from::text
          FROM (SELECT product_id, product_key, valid_to, is_deleted,
                       lead(valid_from) OVER (PARTITION BY product_id ORDER BY valid_from)
                           AS next_from
                  FROM dwh.dim_product WHERE product_key <> -1) AS v
         WHERE next_from IS NOT NULL
           AND (CASE WHEN is_deleted THEN next_from < valid_to ELSE next_from <> valid_to END)""",
    "overlapping product versions": """
        SELECT a.product_id, a.product_key, b.product_key
          FROM dwh.dim_product AS a JOIN dwh.dim_product AS b
            ON a.product_id = b.product_id AND a.product_key < b.product_key
           AND tstzrange(a.valid_from, a.valid_to) && tstzrange(b.valid_from, b.valid_to)""",
    # A deal with an engage date takes the version in effect at that day (00:00 UTC); the
    # first version when the date is earlier than all versions.
    "fact with an engage date not on the version in effect then": """
        WITH version AS MATERIALIZED (
            -- each version's period of engage dates, the first one's from the start (a
            -- join, not correlated subqueries: Citus runs it with the facts distributed)
            SELECT v.product_key, v.product_id,
                   CASE WHEN lag(v.valid_from) OVER w IS NULL THEN '-infinity' ELSE v.valid_from
                   END AS from_day,
                   coalesce(lead(v.valid_from) OVER w, 'infinity') AS before_day
              FROM dwh.dim_product AS v
             WHERE v.product_key <> -1
            WINDOW w AS (PARTITION BY v.product_id ORDER BY v.valid_from)
        )
        SELECT f.opportunity_id, f.product_key, e.product_key AS expected
          FROM dwh.fact_sales_performance AS f
          JOIN dwh.dim_product AS p ON p.product_key = f.product_key
          JOIN version AS e
            ON e.product_id = p.product_id
           AND to_date(f.engage_date_key::text, 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC'
               >= e.from_day
           AND to_date(f.engage_date_key::text, 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC'
               < e.before_day
         WHERE NOT f.is_deleted AND f.engage_date_key <> -1 AND f.product_key <> -1
           AND e.product_key <> f.product_key""",
    "fact list price is not its product version's price": """
        SELECT f.opportunity_id, f.list_price, p.sales_price
          FROM dwh.fact_sales_performance AS f JOIN dwh.dim_product AS p USING (product_key)
         WHERE NOT f.is_deleted AND f.product_key <> -1
           AND f.list_price IS DISTINCT FROM p.sales_price""",
    "live fact on a deleted account or agent, or on a deleted product": """
        SELECT f.opportunity_id
          FROM dwh.fact_sales_performance AS f
          JOIN dwh.dim_account AS a USING (account_key)
          JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
          JOIN dwh.dim_product AS p USING (product_key)
         WHERE NOT f.is_deleted
           AND (a.is_deleted OR g.is_deleted
                OR (f.product_key <> -1 AND NOT EXISTS (
                        SELECT FROM dwh.dim_product AS c
                         WHERE c.product_id = p.product_id AND c.is_current)))""",
}


def check_problems(dsn: str, checks: dict[str, str], limit: int = 8) -> list[str]:
    """Runs each named check query (its rows are the violations); a line per check that
    found any, with the first `limit` rows."""
    out: list[str] = []
    with psycopg.connect(dsn) as conn:
        for name, query in checks.items():
            rows = conn.execute(query).fetchall()
            if rows:
                out.append(f"{name}: {len(rows)} rows, e.g. {rows[:limit]}")
    return out


def consistency_problems(olap_dsn: str, limit: int = 8) -> list[str]:
    return check_problems(olap_dsn, CONSISTENCY_CHECKS, limit)
