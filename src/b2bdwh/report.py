"""`b2bdwh report`: the warehouse as one self-contained HTML page of plotly charts.

Sales (won value by close month with the win rate, this month and quarter against the
previous ones and a year earlier, won value by agent, manager, regional office and sector,
win rate by agent and by product, the pipeline funnel) from the reporting views of dwh, and
the warehouse's health (recent runs with their durations and row counts, failed validations,
errors, data-quality issues, quarantined rows) from etl. plotly.js is embedded inline, so the
file opens anywhere without a network. Each chart's figure is a JSON block in the page
(<script type="application/json" class="figure">): what is drawn can be read back from the
file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import plotly.graph_objects as go
import psycopg
from plotly.offline import get_plotlyjs

from b2bdwh import settings
from b2bdwh.db import CliError, connect, describe
from b2bdwh.status import FAILED_CHECKS  # the same failed checks `b2bdwh status` lists

HELP = "write an HTML report with charts: sales, the pipeline and the warehouse's health"

DEFAULT_OUT = Path("build/report.html")

# The CRM's close values are US dollars (the public CRM export the source mirrors).
CURRENCY = "$"

SERVER = """
SELECT current_database(), host(inet_server_addr()), current_setting('port'),
       current_setting('server_version')
"""
MONTHS = """
SELECT month_date_key, month_start, won_deals, lost_deals, won_value, win_rate
  FROM dwh.v_sales_by_month ORDER BY month_date_key
"""
# The latest close date of a live closed deal: the period comparison's "now".
LATEST_CLOSE = """
SELECT max(d.full_date)
  FROM dwh.fact_sales_performance AS f JOIN dwh.dim_date AS d ON d.date_key = f.close_date_key
 WHERE f.is_closed AND NOT f.is_deleted AND f.close_date_key <> -1
"""
# Won deals and value per close day of live deals, between two date keys (YYYYMMDD).
WON_BY_DAY = """
SELECT d.full_date, count(*), sum(f.close_value)
  FROM dwh.fact_sales_performance AS f JOIN dwh.dim_date AS d ON d.date_key = f.close_date_key
 WHERE f.is_won AND NOT f.is_deleted AND f.close_date_key BETWEEN %s AND %s
 GROUP BY d.full_date
"""
AGENTS = """
SELECT sales_agent_name, coalesce(regional_office, '(no office)'),
       won_deals, lost_deals, won_value, win_rate, coalesce(manager_name, '(no manager)')
  FROM dwh.v_agent_performance ORDER BY win_rate NULLS FIRST, won_value, sales_agent_name
"""
PRODUCTS = """
SELECT product_name, series, won_deals, lost_deals, won_value, win_rate
  FROM dwh.v_product_performance ORDER BY win_rate NULLS FIRST, won_value, product_name
"""
SECTORS = """
SELECT coalesce(sector, '(no sector)'), sum(won_deals)::bigint, sum(won_value)
  FROM dwh.v_account_performance GROUP BY 1 HAVING sum(won_deals) > 0 ORDER BY 3, 1
"""
# The deal history's as-of questions (issue 13): the open pipeline at the end of each week,
# and the days from engaging to closing of the deals closed in a span of months.
PIPELINE_WEEKS = """
SELECT w.day::date, p.deal_stage, sum(p.open_deals)::bigint, sum(p.open_value)
  FROM generate_series(%s::date, %s::date, interval '7 days') AS w (day)
 CROSS JOIN LATERAL dwh.open_pipeline_as_of(w.day::date) AS p
 GROUP BY 1, 2, p.deal_stage_key
 ORDER BY 1, min(p.deal_stage_key)
"""
STAGE_DURATIONS = """
SELECT product, sales_agent, closed_deals, median_days, p25_days, p75_days, p90_days
  FROM dwh.stage_durations(%s, %s) ORDER BY product, sales_agent
"""
OPEN_STAGES = """
SELECT deal_stage_name, open_deals, list_value, avg_age_days
  FROM dwh.v_pipeline_by_stage ORDER BY stage_order, deal_stage_key
"""
RUNS = """
SELECT r.run_id, r.pipeline, r.status, r.started_at,
       extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at)::float8,
       coalesce(r.message, ''),
       coalesce(sum(m.rows_in), 0)::bigint, coalesce(sum(m.rows_inserted), 0)::bigint,
       coalesce(sum(m.rows_updated), 0)::bigint, coalesce(sum(m.rows_deleted), 0)::bigint,
       coalesce(sum(m.rows_rejected), 0)::bigint
  FROM (SELECT * FROM etl.run ORDER BY run_id DESC LIMIT %s) AS r
  LEFT JOIN etl.loading_metadata AS m ON m.run_id = r.run_id
 GROUP BY r.run_id, r.pipeline, r.status, r.started_at, r.finished_at, r.message
 ORDER BY r.run_id
"""
RUN_COUNTS = "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM etl.run"
ERRORS = """
SELECT to_char(e.logged_at, 'YYYY-MM-DD HH24:MI:SS'), e.run_id, e.procedure_name,
       coalesce(e.sqlstate, ''), regexp_replace(e.message, '\\s+', ' ', 'g')
  FROM etl.error_log AS e
 WHERE e.kind = 'error' AND e.run_id = ANY (%s)
 ORDER BY e.error_id DESC LIMIT 20
"""
# Generic over the rules: whatever (table, rule) pairs etl.data_quality_issue holds.
DQ_ISSUES = """
SELECT i.run_id, i.table_name || ': ' || i.rule, count(*)
  FROM etl.data_quality_issue AS i WHERE i.run_id = ANY (%s)
 GROUP BY 1, 2 ORDER BY 2, 1
"""
QUARANTINED = """
SELECT e.run_id, coalesce(e.table_name, '?'), count(*)
  FROM etl.error_log AS e WHERE e.kind = 'quarantine' AND e.run_id = ANY (%s)
 GROUP BY 1, 2 ORDER BY 2, 1
"""

# What every chart shares: a plain white theme, no plotly logo in the toolbar.
TEMPLATE = "plotly_white"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
STATUS_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "running": "#f9a825"}
# Money on an axis: $250k, $1.5M.
MONEY_AXIS = {"tickprefix": CURRENCY, "tickformat": "~s"}
# A legend above the plot area, at the right: clear of axis titles, tick labels and bar text.
LEGEND_ON_TOP = {
    "orientation": "h",
    "yanchor": "bottom",
    "y": 1.02,
    "xanchor": "right",
    "x": 1,
}


@dataclass
class Chart:
    """One plotly figure and where it goes: its id in the page, wide or half a row."""

    chart_id: str
    figure: go.Figure
    wide: bool = False


@dataclass
class Report:
    html: str
    charts: int
    runs: int


def number(value: object) -> float | int | None:
    """Decimals and other numerics as JSON numbers (plotly's JSON has no Decimal)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return float(value)
    return value  # type: ignore[return-value]


def money(value: float | Decimal | None) -> str:
    """$1,234,567: whole units, a thousands separator, the currency sign."""
    if value is None:
        return ""
    sign = "-" if value < 0 else ""
    return f"{sign}{CURRENCY}{abs(float(value)):,.0f}"


def short_money(value: float | Decimal) -> str:
    """$1.23M, $456k, $789: for labels on bars."""
    v = float(value)
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{CURRENCY}{v / size:.3g}{unit}"
    return f"{CURRENCY}{v:,.0f}"


def percent(value: float | Decimal | None) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def empty_note(figure: go.Figure, text: str) -> go.Figure:
    """An honest empty chart: the axes and a sentence saying what is missing."""
    figure.add_annotation(
        text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 16}
    )
    return figure


def layout(
    figure: go.Figure,
    title: str,
    height: int = 420,
    subtitle: str | None = None,
    **extra: object,
) -> go.Figure:
    title_spec: dict[str, object] = {"text": title, "x": 0.01, "xanchor": "left"}
    if subtitle:
        title_spec["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#616161"}}
    extra.setdefault("legend", LEGEND_ON_TOP)
    figure.update_layout(
        title=title_spec,
        template=TEMPLATE,
        height=height,
        margin={"l": 60, "r": 30, "t": 100 if subtitle else 80, "b": 50},
        **extra,
    )
    return figure


def bar_height(rows: int) -> int:
    """Tall enough for one readable bar per row."""
    return max(300, 130 + 22 * rows)


def text_positions(values: Sequence[object], share: float = 0.3) -> list[str]:
    """A bar's label inside it when the bar is long enough to hold it, else just after it
    (plotly's "auto" hides the label of a bar of zero length)."""
    top = max((float(v) for v in values if v is not None), default=0.0)
    return [
        "inside" if v is not None and top and float(v) >= share * top else "outside" for v in values
    ]


def monthly_chart(rows: Sequence[tuple]) -> go.Figure:
    # The Unknown month (-1: closed without a close date) is labelled, not dropped.
    labels = [f"{start:%Y-%m}" if start else "no close date" for _key, start, *_ in rows]
    figure = go.Figure()
    figure.add_bar(
        x=labels,
        y=[number(r[4]) for r in rows],
        name="won value",
        marker_color="#1565c0",
        customdata=[[r[2], r[3]] for r in rows],
        hovertemplate=f"%{{x}}<br>won value {CURRENCY}%{{y:,.0f}}<br>won %{{customdata[0]:,}},"
        " lost %{customdata[1]:,}<extra></extra>",
    )
    figure.add_scatter(
        x=labels,
        y=[number(r[5]) for r in rows],
        name="win rate",
        yaxis="y2",
        mode="lines+markers",
        line_color="#ef6c00",
        hovertemplate="%{x}<br>win rate %{y:.1%}<extra></extra>",
    )
    layout(
        figure,
        "Won value by close month, with the win rate",
        xaxis={"type": "category", "title": "close month"},
        yaxis={"title": "won value", "rangemode": "tozero", **MONEY_AXIS},
        yaxis2={
            "title": "win rate",
            "overlaying": "y",
            "side": "right",
            "tickformat": ".0%",
            "range": [0, 1],
            "tickmode": "linear",
            "dtick": 0.25,
            "showgrid": False,
        },
    )
    return empty_note(figure, "No closed deals yet") if not rows else figure


def win_rate_chart(rows: Sequence[tuple], what: str, group: str) -> go.Figure:
    """Horizontal bars, one per agent or product with closed deals: the win rate, with the
    counts behind it. The axis ends at 100%."""
    names = [str(r[0]) for r in rows]
    figure = go.Figure(
        go.Bar(
            x=[number(r[5]) for r in rows],
            y=names,
            orientation="h",
            marker_color="#2e7d32",
            text=[f"{percent(r[5])} of {r[2] + r[3]:,}" for r in rows],
            # Inside a long bar (one at 100% too), just after a short one (0% too).
            textposition=text_positions([r[5] for r in rows]),
            insidetextanchor="end",
            cliponaxis=False,
            customdata=[[r[1] or "", r[2], r[3], number(r[4])] for r in rows],
            hovertemplate=f"%{{y}} ({group} %{{customdata[0]}})<br>win rate %{{x:.1%}}<br>"
            "won %{customdata[1]:,}, lost %{customdata[2]:,}<br>"
            f"won value {CURRENCY}%{{customdata[3]:,.0f}}<extra></extra>",
        )
    )
    layout(
        figure,
        f"Win rate by {what} (closed deals)",
        height=bar_height(len(rows)),
        xaxis={"tickformat": ".0%", "range": [0, 1], "title": "won / (won + lost)"},
        yaxis={"type": "category", "automargin": True},
    )
    return empty_note(figure, f"No {what} has closed deals yet") if not rows else figure


def value_chart(rows: Sequence[tuple[str, int, object]], what: str, colour: str) -> go.Figure:
    """Horizontal bars of won value, one per (name, won deals, won value), smallest first
    (plotly draws the first row at the bottom)."""
    figure = go.Figure(
        go.Bar(
            x=[number(r[2]) for r in rows],
            y=[str(r[0]) for r in rows],
            orientation="h",
            marker_color=colour,
            text=[short_money(r[2]) for r in rows],
            textposition=text_positions([r[2] for r in rows]),
            insidetextanchor="end",
            cliponaxis=False,
            customdata=[[r[1]] for r in rows],
            hovertemplate=f"%{{y}}<br>won value {CURRENCY}%{{x:,.0f}}<br>"
            "%{customdata[0]:,} deals won<extra></extra>",
        )
    )
    layout(
        figure,
        f"Won value by {what}",
        height=bar_height(len(rows)),
        xaxis={"title": "won value", "rangemode": "tozero", **MONEY_AXIS},
        yaxis={"type": "category", "automargin": True},
    )
    return empty_note(figure, "No deal won yet") if not rows else figure


def won_by(rows: Sequence[tuple], name: int) -> list[tuple[str, int, Decimal]]:
    """Agents' won deals and value summed by one of their columns (manager, office), as
    (name, won deals, won value) rows ordered by value; groups that won nothing are left out."""
    totals: dict[str, tuple[int, Decimal]] = {}
    for r in rows:
        deals, value = totals.get(r[name], (0, Decimal(0)))
        totals[r[name]] = (deals + r[2], value + r[4])
    return sorted(((k, d, v) for k, (d, v) in totals.items() if d), key=lambda t: (t[2], t[0]))


@dataclass
class Period:
    kind: str  # "month" or "quarter"
    role: str  # "current", "previous" or "year earlier"
    first: dt.date
    last: dt.date  # to the same day as the latest close date in the current period
    label: str


def month_start(year: int, month: int) -> dt.date:
    """The first day of a month, months counted on past December and before January."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dt.date(year, month, 1)


def periods(latest: dt.date) -> list[Period]:
    """The month and the quarter of the latest close date, the ones before them, and the same
    ones a year earlier, each to date: from its first day to the same point in it as the latest
    close date in the current one (the same day of the same month of the period, or the end of
    a shorter month)."""
    found = []
    for kind, months in (("month", 1), ("quarter", 3)):
        current = month_start(latest.year, 1 + months * ((latest.month - 1) // months))
        into = latest.month - current.month  # whole months into the period
        for role, back in (("year earlier", 12), ("previous", months), ("current", 0)):
            first = month_start(current.year, current.month - back)
            month = month_start(first.year, first.month + into)
            month_end = month_start(month.year, month.month + 1) - dt.timedelta(days=1)
            last = min(month + dt.timedelta(days=latest.day - 1), month_end)
            name = (
                f"{first:%b %Y}"
                if kind == "month"
                else f"Q{(first.month - 1) // 3 + 1} {first.year}"
            )
            found.append(Period(kind, role, first, last, f"{name} to {last:%b} {last.day}"))
    return found


def date_key(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def change(now: Decimal, then: Decimal) -> str:
    if not then:
        return "n/a" if now else "±0%"
    return f"{100 * (now - then) / then:+.0f}%"


def periods_chart(latest: dt.date | None, days: Sequence[tuple]) -> go.Figure:
    """This month and quarter to date against the previous ones and the same ones a year
    earlier, to the same day, from won deals per close day. "This" is relative to the latest
    close date in the warehouse, not to today: the demo data is historical."""
    figure = go.Figure()
    title = "This month and quarter to date, against the previous ones and a year earlier"
    if latest is None:
        layout(figure, title, height=380)
        return empty_note(figure, "No closed deal with a close date yet")
    spans = periods(latest)
    totals = {}
    for p in spans:
        chosen = [(n, v) for day, n, v in days if p.first <= day <= p.last]
        totals[(p.kind, p.role)] = (
            sum(n for n, _v in chosen),
            sum((v or Decimal(0) for _n, v in chosen), Decimal(0)),
        )
    ticks = []
    for kind in ("month", "quarter"):
        now = totals[(kind, "current")][1]
        current = next(p for p in spans if p.kind == kind and p.role == "current")
        ticks.append(
            f"<b>this {kind}: {current.label}</b><br>"
            f"{change(now, totals[(kind, 'previous')][1])} on the previous {kind}, "
            f"{change(now, totals[(kind, 'year earlier')][1])} on a year earlier"
        )
    for role, colour, name in (
        ("year earlier", "#b0bec5", "the same period a year earlier"),
        ("previous", "#64b5f6", "the previous period"),
        ("current", "#1565c0", "this period"),
    ):
        chosen = [p for p in spans if p.role == role]
        figure.add_bar(
            x=[p.kind for p in chosen],
            y=[number(totals[(p.kind, role)][1]) for p in chosen],
            name=name,
            marker_color=colour,
            text=[f"{p.label}<br>{short_money(totals[(p.kind, role)][1])}" for p in chosen],
            textposition="outside",
            cliponaxis=False,
            customdata=[
                [p.label, f"{p.first:%Y-%m-%d}", f"{p.last:%Y-%m-%d}", totals[(p.kind, role)][0]]
                for p in chosen
            ],
            hovertemplate="%{customdata[0]} (%{customdata[1]} to %{customdata[2]})<br>"
            f"won value {CURRENCY}%{{y:,.0f}}<br>"
            "%{customdata[3]:,} deals won<extra></extra>",
        )
    layout(
        figure,
        title,
        height=440,
        subtitle=(
            f"Relative to the latest close date in the data, {latest:%Y-%m-%d}, not to today"
            " (the demo data is historical); every period to the same day"
        ),
        barmode="group",
        xaxis={
            "type": "category",
            "tickmode": "array",
            "tickvals": ["month", "quarter"],
            "ticktext": ticks,
        },
        yaxis={"title": "won value", "rangemode": "tozero", **MONEY_AXIS},
        legend={**LEGEND_ON_TOP, "y": 1.08},
    )
    return figure


def funnel_chart(open_stages: Sequence[tuple], won: int, lost: int) -> go.Figure:
    """Deals that reached each stage: a deal at a later stage passed the earlier ones.

    Open deals come from v_pipeline_by_stage in stage order; closed deals (won or lost, from
    the monthly figures) count at every open stage and at 'Closed'; the won ones at 'Won'.
    """
    known = [r for r in open_stages if r[0] != "Unknown"]
    unknown = sum(r[1] for r in open_stages if r[0] == "Unknown")
    stages, reached, detail = [], [], []
    later = won + lost
    for name, open_deals, list_value, avg_age in reversed(known):
        later += open_deals
        stages.insert(0, name)
        reached.insert(0, later)
        age = f", mean age {float(avg_age):.0f} days" if avg_age is not None else ""
        detail.insert(0, f"{open_deals:,} open now, list value {money(list_value)}{age}")
    if unknown:
        reached[0] += unknown
        detail[0] += f" (+{unknown:,} open at an unknown stage)"
    stages += ["Closed", "Won"]
    reached += [won + lost, won]
    detail += [f"{won:,} won, {lost:,} lost", f"{won:,} won"]
    figure = go.Figure(
        go.Funnel(
            y=stages,
            x=reached,
            texttemplate="%{value:,} (%{percentInitial:.0%})",
            customdata=detail,
            marker={"color": ["#90caf9", "#42a5f5", "#1e88e5", "#2e7d32"][-len(stages) :]},
            hovertemplate="%{y}: %{x:,} deals reached it<br>%{customdata}<extra></extra>",
        )
    )
    layout(figure, "Pipeline funnel: live deals that reached each stage", height=380)
    return empty_note(figure, "No deals yet") if sum(reached) == 0 else figure


WEEKS_SHOWN = 26
STAGE_COLOURS = {"Prospecting": "#90caf9", "Engaging": "#1e88e5", "Unknown": "#b0bec5"}


def week_ends(latest: dt.date, weeks: int = WEEKS_SHOWN) -> tuple[dt.date, dt.date]:
    """The first and last of `weeks` Sundays, the last on or before `latest`."""
    last = latest - dt.timedelta(days=(latest.weekday() + 1) % 7)
    return last - dt.timedelta(weeks=weeks - 1), last


def pipeline_weeks_chart(rows: Sequence[tuple]) -> go.Figure:
    """Open value at list price by stage at the end of each week, stacked, from the deal
    history (dwh.open_pipeline_as_of): what the pipeline looked like then, not what the
    deals are now."""
    figure = go.Figure()
    title = "Open pipeline at the end of each week, by stage (at list price)"
    if not rows:
        layout(figure, title, height=380)
        return empty_note(figure, "No open deal in these weeks")
    stages = list(dict.fromkeys(r[1] for r in rows))
    days = sorted({r[0] for r in rows})
    by = {(r[0], r[1]): r for r in rows}
    for stage in stages:
        points = [by.get((day, stage)) for day in days]
        figure.add_bar(
            x=[f"{day:%Y-%m-%d}" for day in days],
            y=[number(p[3]) if p else 0 for p in points],
            name=stage,
            marker_color=STAGE_COLOURS.get(stage, "#78909c"),
            customdata=[p[2] if p else 0 for p in points],
            hovertemplate=f"{stage}, end of %{{x}}<br>list value {CURRENCY}%{{y:,.0f}}<br>"
            "%{customdata:,} open deals<extra></extra>",
        )
    layout(
        figure,
        title,
        height=400,
        subtitle=f"The {len(days)} Sundays up to the latest close date, as the history knew them",
        barmode="stack",
        xaxis={"type": "category", "title": "end of week (Sunday)"},
        yaxis={"title": "open value at list price", "rangemode": "tozero", **MONEY_AXIS},
        legend=LEGEND_ON_TOP,
    )
    return figure


def stage_durations_chart(rows: Sequence[tuple], first: dt.date, last: dt.date) -> go.Figure:
    """Median days from engaging to closing per product and agent (dwh.stage_durations),
    as a heat map; the hover gives the deals and the other percentiles."""
    figure = go.Figure()
    title = "Days from engaging to closing: median per product and agent"
    if not rows:
        layout(figure, title, height=380)
        return empty_note(figure, "No deal closed in these months")
    # dwh.stage_durations gives each product over all its agents too (agent NULL): the
    # first column.
    everyone = "all agents"
    rows = [(r[0], r[1] or everyone, *r[2:]) for r in rows]
    products = sorted({r[0] for r in rows})
    agents = [everyone, *sorted({r[1] for r in rows} - {everyone})]
    cell = {(r[0], r[1]): r for r in rows}
    z, text = [], []
    for product in products:
        z.append([cell[(product, a)][3] if (product, a) in cell else None for a in agents])
        text.append(
            [
                (
                    f"{cell[(product, a)][2]:,} deals; 25th {cell[(product, a)][4]:.0f},"
                    f" 75th {cell[(product, a)][5]:.0f}, 90th {cell[(product, a)][6]:.0f} days"
                )
                if (product, a) in cell
                else "no deal"
                for a in agents
            ]
        )
    figure.add_heatmap(
        x=agents,
        y=products,
        z=z,
        text=text,
        colorscale="Blues",
        colorbar={"title": "median days"},
        hovertemplate="%{y}, %{x}<br>median %{z:.1f} days<br>%{text}<extra></extra>",
    )
    layout(
        figure,
        title,
        height=max(380, 60 + 28 * len(products)),
        subtitle=f"Deals closed (won or lost) from {first:%Y-%m} to {last:%Y-%m}, by the history",
        xaxis={"tickangle": -45},
    )
    return figure


def run_label(run: tuple) -> str:
    return f"#{run[0]} {run[1].replace('_', ' ')}"


def durations_chart(runs: Sequence[tuple]) -> go.Figure:
    figure = go.Figure(
        go.Bar(
            x=[run_label(r) for r in runs],
            y=[r[4] for r in runs],
            marker_color=[STATUS_COLOURS.get(r[2], "#757575") for r in runs],
            text=[f"{r[4]:.1f} s" for r in runs],
            textposition="outside",
            cliponaxis=False,
            customdata=[[r[2], f"{r[3]:%Y-%m-%d %H:%M:%S}", r[5][:120]] for r in runs],
            hovertemplate="%{x}: %{customdata[0]}<br>started %{customdata[1]}<br>"
            "%{y:.2f} s<br>%{customdata[2]}<extra></extra>",
        )
    )
    layout(
        figure,
        "Run durations, coloured by status",
        xaxis={"type": "category"},
        yaxis={"title": "seconds", "rangemode": "tozero"},
    )
    return figure


def rows_chart(runs: Sequence[tuple]) -> go.Figure:
    figure = go.Figure()
    labels = [run_label(r) for r in runs]
    for index, (name, colour) in enumerate(
        [
            ("read", "#90a4ae"),
            ("inserted", "#1e88e5"),
            ("updated", "#8e24aa"),
            ("deleted", "#6d4c41"),
            ("rejected", "#c62828"),
        ]
    ):
        figure.add_bar(
            x=labels,
            y=[r[6 + index] for r in runs],
            name=name,
            marker_color=colour,
            hovertemplate=f"%{{x}}<br>{name} %{{y:,}} rows<extra></extra>",
        )
    # Log scale: an initial load writes thousands of times more rows than an update.
    layout(
        figure,
        "Rows per run, over all steps (log scale)",
        barmode="group",
        xaxis={"type": "category"},
        yaxis={"type": "log", "title": "rows"},
    )
    return figure


def per_run_chart(runs: Sequence[tuple], counts: Sequence[tuple], title: str) -> go.Figure:
    """Stacked bars: per run, the rows of each kind (rule or table); every run shown, 0 too.
    The legend (rule names can be long) stands in a column at the right of the plot."""
    found = {(run_id, kind): n for run_id, kind, n in counts}
    figure = go.Figure()
    for kind in sorted({kind for _run, kind in found}):
        figure.add_bar(
            x=[run_label(r) for r in runs],
            y=[found.get((r[0], kind), 0) for r in runs],
            name=kind,
            hovertemplate=f"%{{x}}<br>{html.escape(kind)}: %{{y:,}} rows<extra></extra>",
        )
    layout(
        figure,
        title,
        barmode="stack",
        xaxis={"type": "category"},
        yaxis={"title": "rows", "rangemode": "tozero"},
        legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
        showlegend=True,
    )
    return figure


def html_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    if not rows:
        return f'<p class="none">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    # Messages (the last column) wrap: the whole text, on as many lines as it takes.
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def heading(text: str, bad: bool = False) -> str:
    css = ' class="bad"' if bad else ""
    return f"<h3{css}>{html.escape(text)}</h3>"


def tile(label: str, value: str, key: str) -> str:
    return (
        f'<div class="tile"><div class="label">{html.escape(label)}</div>'
        f'<div class="value" id="kpi-{key}">{html.escape(value)}</div></div>'
    )


def figure_block(chart: Chart) -> str:
    # The figure as JSON, made safe to sit inside a <script> element.
    data = chart.figure.to_json().replace("</", "<\\/")
    css = "chart wide" if chart.wide else "chart"
    return (
        f'<div class="{css}" id="{chart.chart_id}"></div>\n'
        f'<script type="application/json" class="figure" data-target="{chart.chart_id}">'
        f"{data}</script>"
    )


# Draws every figure; when all are drawn, the body says how many rendered (what a headless
# browser or a person can check). A chart that fails shows its error instead.
RENDER_JS = """
(function () {
  var blocks = Array.prototype.slice.call(document.querySelectorAll('script.figure'));
  var config = %(config)s;
  document.body.dataset.charts = String(blocks.length);
  Promise.all(blocks.map(function (block) {
    return Promise.resolve().then(function () {  // a throw becomes a rejection, caught below
      var figure = JSON.parse(block.textContent);
      return Plotly.newPlot(block.dataset.target, figure.data, figure.layout, config);
    });
  })).then(function (divs) {
    var drawn = divs.filter(function (div) { return div.querySelector('svg.main-svg'); });
    document.body.dataset.chartsRendered = String(drawn.length);
  }).catch(function (error) {
    document.body.dataset.chartError = String(error);
    var banner = document.getElementById('render-error');
    banner.textContent = 'A chart failed to draw: ' + error;
    banner.hidden = false;
  });
})();
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       background: #f5f6f8; color: #212121; }
header { background: #263238; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #cfd8dc; font-size: 13px; }
main { padding: 16px 28px 40px; max-width: 1500px; }
h2 { margin: 28px 0 10px; font-size: 18px; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; }
.tile { background: #fff; border-radius: 6px; padding: 12px 16px; min-width: 150px;
        box-shadow: 0 1px 2px rgba(0,0,0,.1); }
.tile .label { font-size: 12px; color: #616161; }
.tile .value { font-size: 22px; font-weight: 600; margin-top: 4px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 14px; }
.chart { background: #fff; border-radius: 6px; box-shadow: 0 1px 2px rgba(0,0,0,.1); }
.chart.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; background: #fff; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 5px 8px; text-align: left;
         vertical-align: top; }
td:last-child { white-space: pre-wrap; overflow-wrap: anywhere; min-width: 24em; }
.apart { margin: 10px 0 0; color: #616161; }
th { background: #eceff1; }
.none { color: #2e7d32; }
.bad { color: #c62828; font-weight: 600; }
#render-error { background: #ffebee; color: #b71c1c; padding: 10px 28px; }
"""


def page(title: str, subtitle: str, tiles: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document; sections are (id, heading, HTML content)."""
    config = json.dumps(PLOT_CONFIG)
    body = "\n".join(
        f'<section id="{key}"><h2>{html.escape(heading)}</h2>\n{content}</section>'
        for key, heading, content in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>
<div id="render-error" hidden></div>
<main>
<div class="tiles">{tiles}</div>
{body}
</main>
<script type="text/javascript">{RENDER_JS % {"config": config}}</script>
</body>
</html>
"""


def fetch(conn: psycopg.Connection, query: str, params: tuple = ()) -> list[tuple]:
    return conn.execute(query, params).fetchall()


def server_name(conn: psycopg.Connection) -> str:
    """'database X on server H port P (PostgreSQL V)': the server's own name for itself, or
    this machine's name when connected through a Unix socket, never the socket's path."""
    database, address, port, version = conn.execute(SERVER).fetchone()  # type: ignore[misc]
    host = conn.info.host
    if address is None or host.startswith("/"):
        host = address or socket.gethostname()  # a Unix socket: the server runs here
    return f"database {database} on server {host} port {port} (PostgreSQL {version})"


def pair(left: Chart, right: Chart) -> list[Chart]:
    """Two charts side by side, of one height: neither panel is half empty."""
    height = max(left.figure.layout.height or 420, right.figure.layout.height or 420)
    left.figure.update_layout(height=height)
    right.figure.update_layout(height=height)
    return [left, right]


def grid(charts: Sequence[Chart]) -> str:
    return '<div class="grid">' + "\n".join(figure_block(c) for c in charts) + "</div>"


def build(dsn: str, runs_shown: int = 20) -> Report:
    """Read the warehouse and lay out the page."""
    with connect(dsn, autocommit=True) as conn:
        try:
            total_runs, succeeded = conn.execute(RUN_COUNTS).fetchone()  # type: ignore[misc]
            if not succeeded:
                # Only failed runs load nothing worth a chart: the same message as never loaded.
                tried = f" ({total_runs} run(s), none succeeded)" if total_runs else ""
                raise CliError(
                    f"{describe(dsn)} was never loaded{tried}, so there is nothing to report:"
                    " CALL etl.run_initial_load(); (or `make demo`)"
                    + ("; `b2bdwh status` shows why the runs failed" if total_runs else "")
                )
            server = server_name(conn)
            runs = fetch(conn, RUNS, (runs_shown,))
            run_ids = [r[0] for r in runs]
            months = fetch(conn, MONTHS)
            latest_close = conn.execute(LATEST_CLOSE).fetchone()[0]  # type: ignore[index]
            won_days = (
                fetch(
                    conn,
                    WON_BY_DAY,
                    (date_key(month_start(latest_close.year - 1, 1)), date_key(latest_close)),
                )
                if latest_close
                else []
            )
            if latest_close:
                first_week, last_week = week_ends(latest_close)
                pipeline_weeks = fetch(conn, PIPELINE_WEEKS, (first_week, last_week))
                durations_from = month_start(latest_close.year, latest_close.month - 11)
                durations = fetch(conn, STAGE_DURATIONS, (durations_from, latest_close))
            else:
                pipeline_weeks, durations, durations_from = [], [], None
            agents = fetch(conn, AGENTS)
            products = fetch(conn, PRODUCTS)
            sectors = fetch(conn, SECTORS)
            open_stages = fetch(conn, OPEN_STAGES)
            failed = fetch(conn, FAILED_CHECKS, (run_ids,))
            errors = fetch(conn, ERRORS, (run_ids,))
            issues = fetch(conn, DQ_ISSUES, (run_ids,))
            quarantined = fetch(conn, QUARANTINED, (run_ids,))
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as exc:
            raise CliError(
                f"{describe(dsn)} lacks the warehouse's tables or views"
                f" ({str(exc).splitlines()[0]}): run `b2bdwh migrate` (or `make migrate`) first"
            ) from exc

    won = sum(r[2] for r in months)
    lost = sum(r[3] for r in months)
    won_value = sum((r[4] for r in months), Decimal(0))
    open_deals = sum(r[1] for r in open_stages)
    open_value = sum((r[2] for r in open_stages), Decimal(0))
    latest = runs[-1]
    # Agents with closed deals are charted; the others are listed apart, by name.
    closing = [r for r in agents if r[2] + r[3]]
    idle = sorted(r[0] for r in agents if not r[2] + r[3])
    by_value = sorted(((r[0], r[2], r[4]) for r in closing), key=lambda t: (t[2], t[0]))

    sales = [
        Chart("chart-monthly", monthly_chart(months), wide=True),
        Chart("chart-periods", periods_chart(latest_close, won_days), wide=True),
        *pair(
            Chart("chart-agents", win_rate_chart(closing, "agent", "office")),
            Chart("chart-agent-value", value_chart(by_value, "agent", "#1565c0")),
        ),
    ]
    teams = [
        *pair(
            Chart("chart-manager-value", value_chart(won_by(agents, 6), "manager", "#5e35b1")),
            Chart(
                "chart-office-value", value_chart(won_by(agents, 1), "regional office", "#00838f")
            ),
        ),
        *pair(
            Chart("chart-products", win_rate_chart(products, "product", "series")),
            Chart("chart-sector-value", value_chart(sectors, "sector", "#ef6c00")),
        ),
        Chart("chart-funnel", funnel_chart(open_stages, won, lost), wide=True),
    ]
    history = [
        Chart("chart-pipeline-weeks", pipeline_weeks_chart(pipeline_weeks), wide=True),
        Chart(
            "chart-stage-durations",
            stage_durations_chart(durations, durations_from or dt.date.today(), latest_close),
            wide=True,
        ),
    ]
    idle_note = (
        f'<p class="apart" id="agents-without-closed-deals">Agents with no closed deal yet'
        f" ({len(idle)}), not charted: {html.escape(', '.join(idle))}</p>"
        if idle
        else ""
    )

    # Data health: an empty panel collapses to one line.
    health = [
        Chart("chart-run-durations", durations_chart(runs)),
        Chart("chart-run-rows", rows_chart(runs)),
    ]
    collapsed = []
    for chart_id, counts, title, none in (
        (
            "chart-dq-issues",
            issues,
            "Data-quality issues (soft rules: loaded anyway)",
            "Data-quality issues (soft rules): none in these runs.",
        ),
        (
            "chart-quarantine",
            quarantined,
            "Rows quarantined (hard rules: not loaded)",
            "Rows quarantined (hard rules): none in these runs.",
        ),
    ):
        if counts:
            # Wide: rule names are long, and their legend stands at the right of the plot.
            health.append(Chart(chart_id, per_run_chart(runs, counts, title), wide=True))
        else:
            collapsed.append(f'<p class="none" id="{chart_id}-none">{html.escape(none)}</p>')
    charts = sales + teams + history + health

    tiles = "".join(
        [
            tile("won value", money(won_value), "won-value"),
            tile("won deals", f"{won:,}", "won-deals"),
            tile("win rate", percent(Decimal(won) / (won + lost) if won + lost else None), "rate"),
            tile("open deals", f"{open_deals:,}", "open-deals"),
            tile("open pipeline at list price", money(open_value), "open-value"),
            tile(f"latest run #{latest[0]}", f"{latest[2]}", "latest-run"),
        ]
    )

    run_rows = [
        (
            r[0],
            r[1],
            r[2],
            f"{r[3]:%Y-%m-%d %H:%M:%S}",
            f"{r[4]:.1f}",
            f"{r[6]:,}",
            f"{r[7]:,}",
            f"{r[8]:,}",
            f"{r[9]:,}",
            f"{r[10]:,}",
            r[5],
        )
        for r in reversed(runs)
    ]
    health_html = (
        grid(health)
        + "".join(collapsed)
        + "<h3>Runs</h3>"
        + html_table(
            (
                "run",
                "pipeline",
                "status",
                "started",
                "seconds",
                "read",
                "inserted",
                "updated",
                "deleted",
                "rejected",
                "message",
            ),
            run_rows,
            "no run",
        )
        + heading(f"Failed validations ({len(failed)})", bad=bool(failed))
        + html_table(
            ("run", "check", "expected", "found"),
            failed,
            "None: every check of these runs passed.",
        )
        + heading(f"Errors ({len(errors)})", bad=bool(errors))
        + html_table(
            ("logged", "run", "procedure", "sqlstate", "message"),
            errors,
            "None logged by these runs.",
        )
    )
    now = dt.datetime.now(dt.UTC).astimezone()
    subtitle = (
        f"{server}; generated {now:%Y-%m-%d %H:%M:%S %Z}; the last {len(runs)} run(s); "
        "sales figures are live (not deleted) deals, from the dwh reporting views;"
        f" money in US dollars ({CURRENCY})"
    )
    text = page(
        "B2B sales warehouse report",
        subtitle,
        tiles,
        [
            ("sales", "Sales", grid(sales) + idle_note),
            ("teams", "Teams, products, sectors and the pipeline", grid(teams)),
            ("history", "The pipeline over time", grid(history)),
            ("health", "Data health", health_html),
        ],
    )
    return Report(text, len(charts), len(runs))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="FILE",
        help=f"where to write the HTML file (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=20,
        metavar="N",
        help="recent runs shown in the data-health panel (default: 20)",
    )


def run(args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise CliError(f"--runs must be at least 1, not {args.runs}")
    started = time.perf_counter()
    report = build(settings.olap_dsn(), args.runs)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report.html, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from exc
    size = args.out.stat().st_size / 1e6
    took = time.perf_counter() - started
    print(
        f"wrote {args.out} ({size:.1f} MB, {report.charts} charts, last {report.runs} run(s))"
        f" in {took:.1f} s; open it in a browser: file://{args.out.resolve()}"
    )
    return 0
