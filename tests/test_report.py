"""`b2bdwh report`: one self-contained HTML file whose every chart renders in headless Chromium,
with no network, and whose figures are the warehouse's own numbers. A never-loaded warehouse,
or one whose every run failed, gives a clear message; a loaded but empty one an honest empty
report.

The screenshot of the loaded report is kept in build/report-screenshot.png (the HTML next to
it, build/test-report.html) for a person to look at.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import time
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest

import dbtools
from b2bdwh import cli
from b2bdwh.generate import generate
from b2bdwh.simulate import simulate

SCALE = float(os.environ.get("B2B_REPORT_SCALE", "0.3"))
BUILD = dbtools.ROOT / "build"
SCREENSHOT = BUILD / "report-screenshot.png"
CHARTS = [
    "chart-monthly",
    "chart-periods",
    "chart-agents",
    "chart-agent-value",
    "chart-manager-value",
    "chart-office-value",
    "chart-products",
    "chart-sector-value",
    "chart-funnel",
    "chart-pipeline-weeks",
    "chart-stage-durations",
    "chart-run-durations",
    "chart-run-rows",
    "chart-dq-issues",
    "chart-quarantine",
]
# Data-health charts that collapse to one line when they have nothing to show.
COLLAPSIBLE = ["chart-dq-issues", "chart-quarantine"]
# The failure the test provokes: a bad config value, long enough that the error message the
# run keeps needs more than one line of the runs table.
BAD_MARGIN = (
    "UPDATE etl.config SET value = 'not a number of days but a sentence, long enough to wrap"
    " in the runs table' WHERE key = 'date_margin_days'"
)
GOOD_MARGIN = "UPDATE etl.config SET value = '366' WHERE key = 'date_margin_days'"
# Rows that break a soft rule (loaded, listed as issues) or a hard one (quarantined), so that
# the data-health charts have something to show.
DIRTY_DEALS = [
    ("SOFT0001", "Won", "2017-03-01", "2017-02-01", 500),
    ("SOFT0004", "Won", "2017-01-01", None, 700),
    ("DIRTY001", "Won", "2017-01-01", "2017-02-01", "NaN"),
]


def chromium() -> str:
    """The browser's path; its absence fails the test with the way to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail(
        "Chromium is needed to check that the report renders, and it is not installed:"
        " apt-get install -y chromium (`make tools` does it when run as root)"
    )


def browse(html_file: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """Open the file in headless Chromium with every host name unresolvable (no network),
    letting scripts run for up to 20 s of virtual time."""
    args = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=20000",
        *mode,
        html_file.resolve().as_uri(),
    ]
    if os.geteuid() == 0:
        args.insert(2, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


class Page(HTMLParser):
    """What a test needs from a page: the body's attributes, every element's src/href, inline
    styles, the figure JSON blocks, and which chart divs hold a rendered plotly svg."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.links: list[tuple[str, str]] = []
        self.scripts_with_src: list[str] = []
        self.styles: list[str] = []
        self.figures: dict[str, dict] = {}
        self.rendered: set[str] = set()
        self.points: dict[str, int] = {}  # bars, funnel stages, heat maps drawn per chart
        self.chart_divs: list[str] = []
        self._open: list[tuple[str, str | None]] = []  # (tag, chart id) of open elements
        self._in: tuple[str, str | None] | None = None  # ('style' | 'figure', target)
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for name in ("src", "href"):
            if name in a:
                self.links.append((tag, a[name]))
        if tag == "body":
            self.body = a
        if tag == "script" and "src" in a:
            self.scripts_with_src.append(a["src"])
        if tag == "script" and "figure" in a.get("class", "").split():
            self._in, self._text = ("figure", a["data-target"]), []
        if tag == "style":
            self._in, self._text = ("style", None), []
        chart = a.get("id") if "chart" in a.get("class", "").split() else None
        if chart:
            self.chart_divs.append(chart)
        classes = a.get("class", "").split()
        # A bar or funnel stage is a "point"; a heat map draws its cells as one image in "hm".
        if "main-svg" in classes or "point" in classes or "hm" in classes:
            for _tag, open_chart in self._open:
                if open_chart and "main-svg" in classes:
                    self.rendered.add(open_chart)
                elif open_chart:
                    self.points[open_chart] = self.points.get(open_chart, 0) + 1
        if tag not in {"meta", "link", "br", "img", "input", "hr", "wbr", "col", "source"}:
            self._open.append((tag, chart))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break
        if self._in and tag in {"script", "style"}:
            kind, target = self._in
            text = "".join(self._text)
            if kind == "figure":
                self.figures[target] = json.loads(text)
            else:
                self.styles.append(text)
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text.append(data)


def report(
    warehouse: dbtools.Warehouse,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    """`b2bdwh report --out OUT` against this warehouse: (exit code, stdout, stderr)."""
    monkeypatch.setenv("B2B_OLAP_DSN", warehouse.olap_dsn)
    code = cli.main(["report", "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_warehouse_never_loaded_gets_a_clear_message(warehouse, monkeypatch, capsys, tmp_path):
    out = tmp_path / "report.html"
    code, _stdout, stderr = report(warehouse, out, monkeypatch, capsys)
    assert code == 1
    assert "was never loaded" in stderr and "etl.run_initial_load()" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()


def test_a_warehouse_whose_every_run_failed_gets_the_same_clear_message(
    warehouse, monkeypatch, capsys, tmp_path
):
    """Not megabytes of empty charts: a failed initial load loaded nothing to chart."""
    dbtools.execute(warehouse.olap_dsn, BAD_MARGIN)
    try:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            dbtools.execute(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    finally:
        dbtools.execute(warehouse.olap_dsn, GOOD_MARGIN)
    assert dbtools.query(warehouse.olap_dsn, "SELECT status FROM etl.run") == [("failed",)]
    out = tmp_path / "report.html"
    code, _stdout, stderr = report(warehouse, out, monkeypatch, capsys)
    assert code == 1
    assert "was never loaded (1 run(s), none succeeded)" in stderr
    assert "etl.run_initial_load()" in stderr and "b2bdwh status" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()


def test_a_warehouse_loaded_from_an_empty_source_gets_an_honest_empty_report(
    warehouse, monkeypatch, capsys, tmp_path
):
    dbtools.execute(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    out = tmp_path / "empty.html"
    code, stdout, _stderr = report(warehouse, out, monkeypatch, capsys)
    assert code == 0
    assert f"wrote {out}" in stdout
    text = out.read_text()
    page = Page(text)
    drawn = [c for c in CHARTS if c not in COLLAPSIBLE]
    assert page.chart_divs == drawn
    notes = {
        chart: [a["text"] for a in figure["layout"].get("annotations", [])]
        for chart, figure in page.figures.items()
    }
    assert notes["chart-monthly"] == ["No closed deals yet"]
    assert notes["chart-periods"] == ["No closed deal with a close date yet"]
    assert notes["chart-agents"] == ["No agent has closed deals yet"]
    assert notes["chart-sector-value"] == ["No deal won yet"]
    assert notes["chart-funnel"] == ["No deals yet"]
    # Empty data-health panels are one line each, not a chart of nothing.
    assert '<p class="none" id="chart-dq-issues-none">' in text
    assert '<p class="none" id="chart-quarantine-none">' in text
    assert '<div class="value" id="kpi-won-value">$0</div>' in text
    # Empty charts still draw: axes and the note.
    dom = Page(browse(out, tmp_path / "profile", "--dump-dom").stdout)
    assert dom.body.get("data-charts-rendered") == str(len(drawn)), dom.body


@pytest.fixture(scope="module")
def loaded(warehouse: dbtools.Warehouse) -> dbtools.Warehouse:
    """A source with a few dirty deals, an initial load, CRM changes, an incremental update."""
    generate(warehouse.oltp_dsn, SCALE)
    with psycopg.connect(warehouse.oltp_dsn) as conn:
        for opp, stage, engage, close, value in DIRTY_DEALS:
            conn.execute(
                "INSERT INTO sales_pipeline (opportunity_id, sales_agent_id, product_id,"
                " account_id, deal_stage, engage_date, close_date, close_value)"
                " VALUES (%s, 1, 1, NULL, %s, %s, %s, %s)",
                (opp, stage, engage, close, value),
            )
    dbtools.execute(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    simulate(warehouse.oltp_dsn, 200, seed=5)
    dbtools.execute(warehouse.olap_dsn, "CALL etl.run_incremental_update()")
    return warehouse


@pytest.fixture(scope="module")
def written(loaded: dbtools.Warehouse) -> tuple[Path, str]:
    """The report of the loaded warehouse, written by the command: (file, what it printed)."""
    BUILD.mkdir(exist_ok=True)
    out = BUILD / "test-report.html"
    out.unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("B2B_OLAP_DSN", loaded.olap_dsn)
        started = time.perf_counter()
        code = cli.main(["report", "--out", str(out)])
        took = time.perf_counter() - started
    assert code == 0
    print(f"\nreport at scale {SCALE:g}: {took:.2f} s, {out.stat().st_size / 1e6:.1f} MB")
    return out, out.read_text()


def test_the_report_is_self_contained(written):
    _out, text = written
    page = Page(text)
    assert page.scripts_with_src == [], "every script is inline"
    outside = [(tag, link) for tag, link in page.links if re.match(r"(https?:)?//", link)]
    assert outside == [], f"elements that load from elsewhere: {outside}"
    assert not any("url(" in style or "@import" in style for style in page.styles)
    assert "Plotly.newPlot" in text and "plotly.js v" in text, "plotly.js is embedded"
    assert page.chart_divs == CHARTS and sorted(page.figures) == sorted(CHARTS)


def test_every_chart_renders_in_headless_chromium_without_network(written, tmp_path):
    out, _text = written
    dom = Page(browse(out, tmp_path / "profile", "--dump-dom").stdout)
    assert "data-chart-error" not in dom.body, dom.body["data-chart-error"]
    assert dom.body.get("data-charts") == str(len(CHARTS)), dom.body
    assert dom.body.get("data-charts-rendered") == str(len(CHARTS)), dom.body
    assert dom.rendered == set(CHARTS), f"charts without a plotly svg: {set(CHARTS) - dom.rendered}"
    # Every chart has data here, so every one draws bars or funnel stages, not just axes.
    assert sorted(dom.points) == sorted(CHARTS), f"charts with nothing drawn: {dom.points}"

    SCREENSHOT.unlink(missing_ok=True)
    browse(out, tmp_path / "profile", f"--screenshot={SCREENSHOT}", "--window-size=1400,4800")
    png = SCREENSHOT.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1400, 4800)
    # A blank page of this size compresses to a few kB; charts and text take far more.
    assert len(png) > 100_000, f"{SCREENSHOT}: {len(png):,} bytes, is it blank?"


def series(figure: dict, name: str | None = None) -> dict:
    traces = [t for t in figure["data"] if name is None or t.get("name") == name]
    assert len(traces) == 1, [t.get("name") for t in figure["data"]]
    return traces[0]


def test_the_figures_are_the_warehouse_numbers(written, loaded):
    _out, text = written
    figures = Page(text).figures
    olap = loaded.olap_dsn

    won_value, won, lost = dbtools.query(
        olap,
        "SELECT coalesce(sum(close_value) FILTER (WHERE is_won), 0),"
        " count(*) FILTER (WHERE is_won), count(*) FILTER (WHERE is_closed AND NOT is_won)"
        " FROM dwh.fact_sales_performance WHERE NOT is_deleted",
    )[0]
    monthly = series(figures["chart-monthly"], "won value")
    assert round(Decimal(str(sum(monthly["y"]))), 2) == won_value
    assert "no close date" in monthly["x"], "the deal closed without a date has its own bar"
    assert f'id="kpi-won-value">${won_value:,.0f}<' in text
    assert f'id="kpi-won-deals">{won:,}<' in text

    stages = dict(
        dbtools.query(
            olap,
            "SELECT s.deal_stage_name, count(*) FROM dwh.fact_sales_performance f"
            " JOIN dwh.dim_deal_stage s USING (deal_stage_key) WHERE NOT f.is_deleted GROUP BY 1",
        )
    )
    funnel = series(figures["chart-funnel"])
    assert funnel["y"] == ["Prospecting", "Engaging", "Closed", "Won"]
    assert funnel["x"] == [
        sum(stages.values()),
        sum(stages.values()) - stages.get("Prospecting", 0),
        won + lost,
        won,
    ]

    rates = dict(
        dbtools.query(
            olap,
            "SELECT g.sales_agent_name,"
            " round(count(*) FILTER (WHERE f.is_won)::numeric / count(*), 4)::float8"
            " FROM dwh.fact_sales_performance f JOIN dwh.dim_sales_agent g USING (sales_agent_key)"
            " WHERE f.is_closed AND NOT f.is_deleted GROUP BY 1",
        )
    )
    agents = series(figures["chart-agents"])
    drawn = zip(agents["y"], agents["x"], strict=True)
    assert {name: rate for name, rate in drawn if rate is not None} == rates

    runs = dbtools.query(olap, "SELECT run_id, pipeline FROM etl.run ORDER BY run_id")
    # The failed load, the empty load, the initial load, the update.
    assert [r[0] for r in runs] == [1, 2, 3, 4]
    durations = series(figures["chart-run-durations"])
    assert durations["x"] == [f"#{r} {p.replace('_', ' ')}" for r, p in runs]

    written_rows = dbtools.query(
        olap,
        "SELECT coalesce(sum(m.rows_inserted), 0)::int, coalesce(sum(m.rows_rejected), 0)::int"
        " FROM etl.run r LEFT JOIN etl.loading_metadata m USING (run_id)"
        " GROUP BY run_id ORDER BY run_id",
    )
    drawn_rows = figures["chart-run-rows"]
    for name, column in (("inserted", 0), ("rejected", 1)):
        assert series(drawn_rows, name)["y"] == [r[column] for r in written_rows], name

    issues = dbtools.scalar(olap, "SELECT count(*) FROM etl.data_quality_issue")
    quarantined = dbtools.scalar(
        olap, "SELECT count(*) FROM etl.error_log WHERE kind = 'quarantine'"
    )
    assert issues >= 2 and quarantined >= 1
    drawn_issues = sum(sum(t["y"]) for t in figures["chart-dq-issues"]["data"])
    drawn_quarantined = sum(sum(t["y"]) for t in figures["chart-quarantine"]["data"])
    assert (drawn_issues, drawn_quarantined) == (issues, quarantined)
    failed = dbtools.scalar(olap, "SELECT count(*) FROM etl.validation_result WHERE NOT passed")
    assert re.search(rf"<h3[^>]*>Failed validations \({failed}\)</h3>", text)


def drawn_bars(figure: dict) -> dict[str, float]:
    bars = series(figure)
    return dict(zip(bars["y"], bars["x"], strict=True))


def won_by(olap: str, dimension: str, name: str, key: str) -> dict[str, float]:
    """Won value of live deals per value of one dimension column, straight from the facts."""
    return {
        group: float(value)
        for group, value in dbtools.query(
            olap,
            f"SELECT coalesce({name}, '(no {name.split('_')[0]})'), sum(f.close_value)"
            f" FROM dwh.fact_sales_performance f JOIN dwh.{dimension} d USING ({key})"
            " WHERE f.is_won AND NOT f.is_deleted GROUP BY 1",
        )
    }


def test_won_value_by_agent_manager_office_and_sector_is_the_warehouse_numbers(written, loaded):
    _out, text = written
    figures = Page(text).figures
    olap = loaded.olap_dsn
    agents = won_by(olap, "dim_sales_agent", "sales_agent_name", "sales_agent_key")
    managers = won_by(olap, "dim_sales_agent", "manager_name", "sales_agent_key")
    offices = won_by(olap, "dim_sales_agent", "regional_office", "sales_agent_key")
    sectors = won_by(olap, "dim_account", "sector", "account_key")
    assert len(managers) > 1 and len(offices) > 1 and len(sectors) > 1
    for chart, expected in (
        ("chart-manager-value", managers),
        ("chart-office-value", offices),
        ("chart-sector-value", sectors),
    ):
        assert drawn_bars(figures[chart]) == pytest.approx(expected), chart
        # Biggest at the top: plotly draws the first bar at the bottom.
        values = series(figures[chart])["x"]
        assert values == sorted(values), chart
    # An agent who closed deals and won none is charted at 0, not left out.
    drawn = drawn_bars(figures["chart-agent-value"])
    assert {a: v for a, v in drawn.items() if v} == pytest.approx(agents)
    # Money as money: $ on the axes and in the tiles.
    for chart in ("chart-agent-value", "chart-manager-value", "chart-sector-value"):
        assert figures[chart]["layout"]["xaxis"]["tickprefix"] == "$", chart
    assert figures["chart-monthly"]["layout"]["yaxis"]["tickprefix"] == "$"
    assert re.search(r'id="kpi-won-value">\$\d{1,3}(,\d{3})*<', text)


def test_agents_without_a_closed_deal_are_listed_apart(written, loaded):
    _out, text = written
    figures = Page(text).figures
    idle = [
        name
        for (name,) in dbtools.query(
            loaded.olap_dsn,
            "SELECT sales_agent_name FROM dwh.dim_sales_agent g WHERE NOT is_deleted"
            " AND sales_agent_key <> -1 AND NOT EXISTS (SELECT FROM dwh.fact_sales_performance f"
            " WHERE f.sales_agent_key = g.sales_agent_key AND f.is_closed AND NOT f.is_deleted)"
            " ORDER BY 1",
        )
    ]
    assert idle, "the generated data has agents without a closed deal"
    listed = re.search(r'<p class="apart" id="agents-without-closed-deals">([^<]*)</p>', text)
    assert listed, "the agents without a closed deal are listed"
    assert listed.group(1).endswith(": " + ", ".join(idle))
    for chart in ("chart-agents", "chart-agent-value"):
        bars = series(figures[chart])
        assert not set(idle) & set(bars["y"]), chart
        assert not any("n/a" in t for t in bars.get("text", [])), chart
    # Win-rate axes end at 100%.
    for chart in ("chart-agents", "chart-products"):
        assert figures[chart]["layout"]["xaxis"]["range"] == [0, 1], chart


def test_the_period_comparison_is_the_warehouse_numbers(written, loaded):
    """This month and quarter (of the latest close date) to date, against the previous ones
    and the same ones a year earlier to the same day, computed here with PostgreSQL's own date
    arithmetic (the same day of the same month of the period, or the end of a shorter
    month)."""
    _out, text = written
    figure = Page(text).figures["chart-periods"]
    latest, *expected = dbtools.query(
        loaded.olap_dsn,
        """
        WITH closed AS (
            SELECT d.full_date, f.close_value, f.is_won
              FROM dwh.fact_sales_performance f JOIN dwh.dim_date d ON d.date_key = f.close_date_key
             WHERE f.is_closed AND NOT f.is_deleted AND f.close_date_key <> -1
        ), anchor AS (SELECT max(full_date) AS day FROM closed),
        span AS (
            SELECT k.kind, r.role, date_trunc(k.kind, a.day) - r.back AS first_day, k.length
              FROM anchor a,
                   (VALUES ('month', interval '1 month'), ('quarter', interval '3 months'))
                       AS k (kind, length),
                   LATERAL (VALUES ('year earlier', interval '1 year'), ('previous', k.length),
                                   ('current', interval '0')) AS r (role, back)
        )
        SELECT NULL, NULL, (SELECT day FROM anchor)::text
        UNION ALL (
        SELECT s.kind, s.role, coalesce(sum(c.close_value) FILTER (WHERE c.is_won), 0)::text
          FROM span s CROSS JOIN anchor a LEFT JOIN closed c
            ON c.full_date >= s.first_day
           AND c.full_date <= least(
                   s.first_day + age(a.day, date_trunc(s.kind, a.day)),
                   s.first_day + age(date_trunc('month', a.day), date_trunc(s.kind, a.day))
                       + interval '1 month' - interval '1 day')
         GROUP BY s.kind, s.role, s.first_day ORDER BY s.first_day)
        """,
    )
    assert latest[2] in figure["layout"]["title"]["subtitle"]["text"]
    assert "not to today" in figure["layout"]["title"]["subtitle"]["text"]
    names = {
        "year earlier": "the same period a year earlier",
        "previous": "the previous period",
        "current": "this period",
    }
    for role, name in names.items():
        bars = series(figure, name)
        drawn = dict(zip(bars["x"], bars["y"], strict=True))
        want = {kind: float(value) for kind, r, value in expected if r == role}
        assert drawn == pytest.approx(want), role


def test_the_header_names_the_database_and_server_and_messages_are_whole(written, loaded):
    _out, text = written
    header = re.search(r"<header>.*?</header>", text, re.S).group(0)
    database = dbtools.scalar(loaded.olap_dsn, "SELECT current_database()")
    assert f"database {database} on server " in header
    host = os.environ.get("PGHOST", "")
    if host.startswith("/"):
        assert host not in header, "a socket path is no server name"
    # The failed run's message is in the runs table whole, in a cell that wraps.
    message = dbtools.scalar(loaded.olap_dsn, "SELECT message FROM etl.run WHERE run_id = 1")
    assert len(message) > 100
    assert f"<td>{html.escape(message)}</td></tr>" in text
    assert "td:last-child { white-space: pre-wrap; overflow-wrap: anywhere;" in text
