"""`b2bdwh summary`: what the last warehouse run did, and a first look at the figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from b2bdwh import settings
from b2bdwh.db import CliError, connect

HELP = "print the last run's steps and validation, and business figures from the star schema"

LAST_RUN = """
SELECT run_id, pipeline, status, started_at, finished_at - started_at, message
  FROM etl.run ORDER BY run_id DESC LIMIT 1
"""
STEPS = """
SELECT step, status, rows_in, rows_inserted, rows_updated, rows_rejected,
       round(extract(epoch FROM finished_at - started_at)::numeric, 2)
  FROM etl.loading_metadata WHERE run_id = %s ORDER BY loading_metadata_id
"""
CHECKS = """
SELECT CASE WHEN passed THEN 'pass' ELSE 'FAIL' END, check_name, actual
  FROM etl.validation_result WHERE run_id = %s ORDER BY validation_id
"""
WINDOW = """
SELECT table_name, count(*) FILTER (WHERE operation = 'I'), count(*) FILTER (WHERE operation = 'U'),
       count(*) FILTER (WHERE operation = 'D'), count(DISTINCT txid)
  FROM etl.change_window GROUP BY 1 ORDER BY 1
"""
NEW_VERSIONS = """
SELECT p.product_name, p.series, p.sales_price,
       to_char(p.valid_from, 'YYYY-MM-DD HH24:MI:SS'),
       CASE WHEN p.is_current THEN '' ELSE to_char(p.valid_to, 'YYYY-MM-DD HH24:MI:SS') END,
       CASE WHEN p.is_current THEN 'current' WHEN p.is_deleted THEN 'deleted' ELSE 'closed' END
  FROM dwh.dim_product p
 WHERE p.run_id = %s AND p.valid_from > '-infinity'
 ORDER BY p.product_id, p.valid_from
"""
FIGURES = {
    "Won value by regional office": """
        SELECT g.regional_office, sum(a.won_deals), sum(a.won_value)
          FROM dwh.fact_sales_monthly_aggregate a
          JOIN dwh.dim_sales_agent g USING (sales_agent_key)
         GROUP BY 1 ORDER BY 3 DESC""",
    "Win rate by product (closed deals)": """
        SELECT p.product_name, sum(a.won_deals) + sum(a.lost_deals),
               round(100.0 * sum(a.won_deals) / nullif(sum(a.won_deals) + sum(a.lost_deals), 0), 1)
          FROM dwh.fact_sales_monthly_aggregate a
          JOIN dwh.dim_product p USING (product_key)
         GROUP BY 1 ORDER BY 3 DESC""",
    "Monthly won value": """
        SELECT to_char(d.full_date, 'YYYY-MM'), sum(a.won_deals), sum(a.won_value)
          FROM dwh.fact_sales_monthly_aggregate a
          JOIN dwh.dim_date d ON d.date_key = a.month_date_key
         GROUP BY 1 ORDER BY 1""",
}
HEADERS = {
    "Won value by regional office": ("office", "won deals", "won value"),
    "Win rate by product (closed deals)": ("product", "closed deals", "win rate %"),
    "Monthly won value": ("month", "won deals", "won value"),
}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, numbers right-aligned with thousands separators."""

    def cell(value: object) -> str:
        if isinstance(value, int):
            return f"{value:,}"
        if value is not None and type(value).__name__ == "Decimal":
            return f"{value:,}"
        return "" if value is None else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str], raw: Sequence[object] | None = None) -> str:
        parts = []
        for i, value in enumerate(values):
            numeric = raw is not None and not isinstance(raw[i], str) and raw[i] is not None
            parts.append(value.rjust(widths[i]) if numeric else value.ljust(widths[i]))
        return "  " + "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(c, r) for c, r in zip(cells, rows, strict=True)]
    return "\n".join(out)


def summary(dsn: str) -> str:
    with connect(dsn) as conn:
        run = conn.execute(LAST_RUN).fetchone()
        if run is None:
            raise CliError("the warehouse has no run yet: CALL etl.run_initial_load();")
        run_id, pipeline, status, started, took, message = run
        out = [
            f"Run {run_id} ({pipeline}) {status}, started {started:%Y-%m-%d %H:%M:%S}"
            + (f", took {took.total_seconds():.1f} s" if took else "")
            + (f": {message}" if message else "")
        ]
        steps = conn.execute(STEPS, (run_id,)).fetchall()
        out.append(
            table(("step", "status", "in", "inserted", "updated", "rejected", "seconds"), steps)
        )
        if pipeline == "incremental_update":
            window = conn.execute(WINDOW).fetchall()
            out += ["", "Source changes applied:"]
            out.append(table(("table", "inserts", "updates", "deletes", "transactions"), window))
            versions = conn.execute(NEW_VERSIONS, (run_id,)).fetchall()
            out += ["", "Product versions this run wrote:"]
            headers = ("product", "series", "list price", "valid from", "valid to", "now")
            out.append(table(headers, versions))
        checks = conn.execute(CHECKS, (run_id,)).fetchall()
        out += ["", "Validation:", table(("result", "check", "found"), checks)]
        for title, query in FIGURES.items():
            out += ["", f"{title}:", table(HEADERS[title], conn.execute(query).fetchall())]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    del args
    print(summary(settings.olap_dsn()))
    return 0
