"""make bench: a reproducible benchmark of the generator, the loads and change capture.

Runs on databases of its own (bench_oltp_<scale>, bench_olap_<scale>), created and
migrated with `b2bdwh migrate`, never on b2b_sales / b2b_sales_olap. Every compared
figure is measured in the same run on the same data and reported as a ratio. Prints a
Markdown table and writes it, with a JSON file of every raw number, under bench/out/.

    .venv/bin/python bench/run.py --scale 100 [--compare-scale 1000] [--keep]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from b2bdwh import reporting

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
B2BDWH = ROOT / ".venv" / "bin" / "b2bdwh"
BARE_SQL = BENCH / "bare_initial_load.sql"
PGBENCH_UPDATE = BENCH / "pgbench_update_stage.sql"
PGBENCH_INSERT = BENCH / "pgbench_insert_deal.sql"
SOURCE_TABLES = ("accounts", "products", "sales_agents", "sales_pipeline")
NOT_BEFORE_VALIDATION = ("etl.validate_run", "etl.finish_run")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- environment


def load_cluster_env() -> None:
    """The project cluster's PGHOST/PGPORT/PGUSER when the caller set none."""
    if os.environ.get("PGHOST"):
        return
    out = subprocess.run(
        ["bash", str(ROOT / "db" / "cluster.sh"), "env"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name, value in re.findall(r"(\w+)='([^']*)'", out):
        if name.startswith("PG"):
            os.environ[name] = value


def find_pgbench() -> str:
    for candidate in (
        os.environ.get("PGBENCH", ""),
        "/usr/lib/postgresql/15/bin/pgbench",
        shutil.which("pgbench") or "",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("pgbench not found: install postgresql-15 or set PGBENCH")


def find_psql() -> str:
    for candidate in ("/usr/lib/postgresql/15/bin/psql", shutil.which("psql") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("psql not found")


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tag_for(scale: float) -> str:
    return f"{scale:g}".replace(".", "_").replace("-", "_")


def admin_dsn() -> str:
    return "dbname=postgres"


def drop_database(name: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# ---------------------------------------------------------------- child processes


@dataclass
class ChildRun:
    seconds: float
    max_rss_kb: int
    output: str


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run a command to the end; its wall time and its own peak RSS (os.wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")
    return ChildRun(seconds, usage.ru_maxrss, output)


# ---------------------------------------------------------------- one scale


@dataclass
class Pair:
    """The bench databases of one scale."""

    scale: float
    prefix: str = ""
    oltp: str = ""
    olap: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tag = f"{self.prefix}{tag_for(self.scale)}"
        self.oltp = f"bench_oltp_{tag}"
        self.olap = f"bench_olap_{tag}"
        self.env = dict(os.environ)
        self.env["B2B_OLTP_DSN"] = f"dbname={self.oltp}"
        self.env["B2B_OLAP_DSN"] = f"dbname={self.olap}"

    def drop(self) -> None:
        drop_database(self.olap)
        drop_database(self.oltp)

    def b2bdwh(self, *args: str) -> ChildRun:
        return run_child([str(B2BDWH), *args], env=self.env)

    def connect(self, which: str) -> psycopg.Connection:
        return psycopg.connect(f"dbname={getattr(self, which)}", autocommit=True)


def source_rows(pair: Pair) -> dict[str, int]:
    with pair.connect("oltp") as conn:
        return {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t))
            ).fetchone()[0]
            for t in SOURCE_TABLES
        }


def last_run_steps(conn: psycopg.Connection, pipeline: str) -> dict:
    """Per-step times (seconds, summed over the step's rows) of the pipeline's last run."""
    run_id, status = conn.execute(
        "SELECT run_id, status FROM etl.run WHERE pipeline = %s ORDER BY run_id DESC LIMIT 1",
        (pipeline,),
    ).fetchone()
    rows = conn.execute(
        """SELECT step,
                  sum(extract(epoch FROM finished_at - started_at))::float8,
                  sum(rows_in), sum(rows_inserted), sum(rows_updated), sum(rows_deleted)
             FROM etl.loading_metadata WHERE run_id = %s
            GROUP BY step ORDER BY min(started_at)""",
        (run_id,),
    ).fetchall()
    steps = {
        step: {
            "seconds": secs or 0.0,
            "rows_in": int(rin),
            "rows_inserted": int(rins),
            "rows_updated": int(rup),
            "rows_deleted": int(rdel),
        }
        for step, secs, rin, rins, rup, rdel in rows
    }
    before = sum(v["seconds"] for k, v in steps.items() if k not in NOT_BEFORE_VALIDATION)
    validation = steps.get("etl.validate_run", {}).get("seconds", 0.0)
    return {
        "run_id": run_id,
        "status": status,
        "steps": steps,
        "before_validation_s": before,
        "validation_s": validation,
    }


def initial_load(pair: Pair) -> dict:
    with pair.connect("olap") as conn:
        conn.execute("SET client_min_messages = warning")
        started = time.perf_counter()
        conn.execute("CALL etl.run_initial_load()")
        wall = time.perf_counter() - started
        result = last_run_steps(conn, "initial_load")
    result["wall_s"] = wall
    return result


TIMED_TAG = re.compile(r"^(SELECT \d+|ALTER TABLE|CREATE TABLE|DROP TABLE)$")


def bare_load(pair: Pair, psql: str) -> dict:
    """bench/bare_initial_load.sql in the warehouse: its CTAS + PK + aggregate times."""
    started = time.perf_counter()
    out = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pair.olap, "-f", str(BARE_SQL)],
        capture_output=True,
        text=True,
        env=pair.env,
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"bare load failed:\n{out.stdout}\n{out.stderr}")
    # -q hides command tags; \timing still prints one "Time:" per statement, in order:
    # DROP, CTAS fact, ADD PRIMARY KEY, CTAS aggregate, DROP.
    times = [float(m) / 1000 for m in re.findall(r"^Time: ([\d.]+) ms", out.stdout, re.M)]
    if len(times) != 5:
        raise RuntimeError(f"bare load: expected 5 timed statements, got:\n{out.stdout}")
    build = times[1:4]
    return {
        "fact_ctas_s": build[0],
        "primary_key_s": build[1],
        "aggregate_ctas_s": build[2],
        "total_s": sum(build),
        "wall_s": wall,
    }


def incremental(pair: Pair, changes: int, seed: int) -> dict:
    sim = pair.b2bdwh("simulate", "--changes", str(changes), "--seed", str(seed))
    with pair.connect("olap") as conn:
        conn.execute("SET client_min_messages = warning")
        started = time.perf_counter()
        conn.execute("CALL etl.run_incremental_update()")
        wall = time.perf_counter() - started
        result = last_run_steps(conn, "incremental_update")
    result.update(
        changes=changes,
        seed=seed,
        wall_s=wall,
        simulate_s=sim.seconds,
        simulate_max_rss_kb=sim.max_rss_kb,
    )
    return result


def warehouse_size(pair: Pair) -> dict:
    with pair.connect("olap") as conn:
        dwh_bytes, facts, db_bytes = conn.execute(
            """SELECT (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'dwh' AND c.relkind IN ('r', 'm', 'p')),
                      (SELECT count(*) FROM dwh.fact_sales_performance),
                      pg_database_size(current_database())"""
        ).fetchone()
    dwh_bytes, db_bytes = int(dwh_bytes), int(db_bytes)
    per_million = 1e6 / facts if facts else 0.0
    return {
        "facts": facts,
        "dwh_bytes": int(dwh_bytes),
        "database_bytes": int(db_bytes),
        "dwh_mb_per_million_facts": dwh_bytes * per_million / 2**20,
        "database_mb_per_million_facts": db_bytes * per_million / 2**20,
    }


def run_scale(
    pair: Pair, changes: list[int], psql: str, load_repeats: int, years: int | None = None
) -> dict:
    """Migrate, generate, initial load vs bare bound, then incremental updates."""
    result: dict = {
        "scale": pair.scale,
        "years": years,
        "oltp_db": pair.oltp,
        "olap_db": pair.olap,
    }
    say(f"[scale {pair.scale:g}] fresh databases {pair.oltp}, {pair.olap}; migrate")
    pair.drop()
    mig = pair.b2bdwh("migrate")
    result["migrate"] = {"seconds": mig.seconds, "max_rss_kb": mig.max_rss_kb}
    if years:
        # Every fact hot until the archiving below sets a horizon over the data: the
        # default (two years before today) would make every closed deal of it cold.
        with pair.connect("olap") as conn:
            conn.execute("UPDATE etl.config SET value = 'none' WHERE key = 'cold_horizon'")

    say(f"[scale {pair.scale:g}] generate")
    span = ["--years", str(years)] if years else []
    gen = pair.b2bdwh("generate", "--scale", f"{pair.scale:g}", *span)
    rows = source_rows(pair)
    total = sum(rows.values())
    with pair.connect("oltp") as conn:
        first_engage = conn.execute("SELECT min(engage_date) FROM sales_pipeline").fetchone()[0]
    result["generate"] = {
        "seconds": gen.seconds,
        "rows": rows,
        "total_rows": total,
        "rows_per_second": total / gen.seconds,
        "first_engage_date": first_engage.isoformat() if first_engage else None,
        "max_rss_kb": gen.max_rss_kb,
    }

    loads, bares = [], []
    for i in range(load_repeats):
        say(f"[scale {pair.scale:g}] initial load {i + 1}/{load_repeats}")
        loads.append(initial_load(pair))
        say(f"[scale {pair.scale:g}] bare bound {i + 1}/{load_repeats}")
        bares.append(bare_load(pair, psql))
    best_load = min(x["before_validation_s"] for x in loads)
    best_bare = min(x["total_s"] for x in bares)
    result["initial_load"] = {
        "runs": loads,
        "bare_runs": bares,
        "best_before_validation_s": best_load,
        "best_validation_s": min(x["validation_s"] for x in loads),
        "best_bare_s": best_bare,
        "ratio_to_bare": best_load / best_bare,
    }
    result["size"] = warehouse_size(pair)

    # Incremental updates run against a warehouse in the state autovacuum leaves it a
    # little after a load (visibility map set, statistics fresh): measured, not skipped,
    # so that no update meets a vacuum of 8.8M facts halfway.
    say(f"[scale {pair.scale:g}] VACUUM (ANALYZE) the warehouse after its initial load")
    with pair.connect("olap") as conn:
        conn.autocommit = True
        started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        result["vacuum_after_load_s"] = time.perf_counter() - started

    result["incremental"] = {}
    for seed, k in enumerate(changes, start=1):
        say(f"[scale {pair.scale:g}] simulate {k:,} changes, incremental update")
        result["incremental"][str(k)] = incremental(pair, k, seed)
    say(f"[scale {pair.scale:g}] reporting views")
    result["views"] = view_timings(pair)
    say(f"[scale {pair.scale:g}] as-of questions")
    result["as_of"] = as_of_timings(pair)
    if years:
        result["archiving"] = archiving(pair, min(changes, key=lambda k: abs(k - 10_000)))
    return result


def part_sizes(pair: Pair) -> dict:
    """Facts and bytes (heap, indexes, TOAST) of each part of the fact table."""
    with pair.connect("olap") as conn:
        rows = conn.execute(
            """SELECT c.relname, pg_total_relation_size(c.oid),
                      (SELECT count(*) FROM dwh.fact_sales_performance AS f
                        WHERE f.is_cold = (c.relname = 'fact_sales_performance_cold'))
                 FROM pg_class AS c
                WHERE c.oid IN ('dwh.fact_sales_performance_hot'::regclass,
                                'dwh.fact_sales_performance_cold'::regclass)"""
        ).fetchall()
    return {
        name.removeprefix("fact_sales_performance_"): {"bytes": int(size), "facts": int(facts)}
        for name, size, facts in rows
    }


def timed_call(pair: Pair, which: str, statement: str, params: tuple = ()) -> tuple[float, object]:
    """One CALL on its own autocommit connection: (seconds, its first output column)."""
    with pair.connect(which) as conn:
        conn.execute("SET client_min_messages = warning")
        started = time.perf_counter()
        cur = conn.execute(statement, params)
        seconds = time.perf_counter() - started
        row = cur.fetchone() if cur.description else None  # INOUT parameters, if any
        return seconds, (row[0] if row else None)


def archive_round(pair: Pair, cut_off: dt.date) -> dict:
    """The CRM archives the deals closed before cut_off, the warehouse applies that window,
    then moves its facts across the same horizon."""
    src_s, archived = timed_call(
        pair, "oltp", "CALL public.archive_closed_deals(%s, 10000)", (cut_off,)
    )
    inc_s, _ = timed_call(pair, "olap", "CALL etl.run_incremental_update()")
    with pair.connect("olap") as conn:
        inc = last_run_steps(conn, "incremental_update")
        conn.execute(
            "UPDATE etl.config SET value = %s WHERE key = 'cold_horizon'", (cut_off.isoformat(),)
        )
    move_s, _ = timed_call(pair, "olap", "CALL etl.run_horizon_move()")
    with pair.connect("olap") as conn:
        move = last_run_steps(conn, "horizon_move")
    moved = move["steps"]["dwh.move_facts_across_horizon"]["rows_updated"]
    return {
        "cut_off": cut_off.isoformat(),
        "archived": int(archived or 0),
        "source_s": src_s,
        "incremental_s": inc_s,
        "incremental_steps": inc["steps"],
        "move_s": move_s,
        "moved": moved,
        "move_validation_s": move["validation_s"],
    }


def archiving(pair: Pair, changes: int) -> dict:
    """Issue 14: a two-year horizon over the data (the first of the month two years before
    its last close date): the hot part before and after, archiving and moving the first time
    and one month later, then an incremental update and every view after."""
    with pair.connect("olap") as conn:
        last = conn.execute(
            "SELECT max(close_date_key) FROM dwh.fact_sales_performance WHERE is_closed"
        ).fetchone()[0]
    last_day = dt.date(last // 10000, last // 100 % 100, last % 100)
    horizon = dt.date(last_day.year - 2, last_day.month, 1)
    result: dict = {"horizon": horizon.isoformat(), "before": part_sizes(pair)}
    say(f"[scale {pair.scale:g}] archive and move before {horizon} (the first time)")
    result["first"] = archive_round(pair, horizon)
    # What autovacuum does soon after (the rewrites and moves leave dead rows in the hot
    # part), timed, before the sizes.
    with pair.connect("olap") as conn:
        started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) dwh.fact_sales_performance")
        result["vacuum_after_first_s"] = time.perf_counter() - started
    result["after"] = part_sizes(pair)
    month = dt.date(horizon.year + horizon.month // 12, horizon.month % 12 + 1, 1)
    say(f"[scale {pair.scale:g}] archive and move one month more, before {month}")
    result["month"] = archive_round(pair, month)
    say(f"[scale {pair.scale:g}] VACUUM (ANALYZE), {changes:,} changes, the views, after")
    with pair.connect("olap") as conn:
        conn.execute("VACUUM (ANALYZE)")
    result["incremental_after"] = incremental(pair, changes, 77)
    result["views_after"] = view_timings(pair)
    return result


def view_timings(pair: Pair) -> dict:
    """Each reporting view read whole, as a dashboard would: median of 5 after one warm-up
    read, and its rows."""
    with pair.connect("olap") as conn:
        timings = reporting.time_views(conn)
    return {
        view: {"median_ms": t.median_ms, "server_ms": t.server_ms, "rows": t.rows}
        for view, t in timings.items()
    }


def as_of_timings(pair: Pair) -> list[dict]:
    """The deal history's as-of questions over the data's latest complete quarter: each call
    read whole; the median and the slowest call."""
    with pair.connect("olap") as conn:
        return [dataclasses.asdict(t) for t in reporting.time_as_of(conn)]


# ---------------------------------------------------------------- capture overhead


def bulk_statement(kind: str, rows: int) -> str:
    if kind == "update":
        return f"""UPDATE public.sales_pipeline AS p
                      SET close_value = coalesce(p.close_value, 0) + 1
                     FROM (SELECT opportunity_id FROM public.sales_pipeline
                            ORDER BY opportunity_id LIMIT {rows}) AS s
                    WHERE p.opportunity_id = s.opportunity_id"""
    return f"""WITH a AS (SELECT array_agg(sales_agent_id) AS ids FROM public.sales_agents),
                    pr AS (SELECT array_agg(product_id) AS ids FROM public.products),
                    ac AS (SELECT array_agg(account_id) AS ids FROM public.accounts)
               INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id,
                      account_id, deal_stage, engage_date, close_date, close_value)
               SELECT 'BULK' || g,
                      a.ids[1 + g % cardinality(a.ids)],
                      pr.ids[1 + g % cardinality(pr.ids)],
                      ac.ids[1 + g % cardinality(ac.ids)],
                      (ARRAY['Prospecting', 'Engaging', 'Won', 'Lost'])[1 + g % 4],
                      DATE '2024-01-01' + g % 365,
                      CASE WHEN g % 4 >= 2 THEN DATE '2024-06-01' + g % 365 END,
                      CASE WHEN g % 4 = 2 THEN 1000 + g % 5000 WHEN g % 4 = 3 THEN 0 END
                 FROM generate_series(1, {rows}) AS g, a, pr, ac"""


def time_bulk(conn: psycopg.Connection, kind: str, rows: int, capture: bool) -> float:
    """One bulk statement in a transaction that is rolled back; its time in seconds."""
    statement = bulk_statement(kind, rows)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            if not capture:
                cur.execute("ALTER TABLE public.sales_pipeline DISABLE TRIGGER USER")
            started = time.perf_counter()
            cur.execute(statement)
            seconds = time.perf_counter() - started
            if cur.rowcount != rows:
                raise RuntimeError(f"bulk {kind}: {cur.rowcount} rows, expected {rows}")
        finally:
            cur.execute("ROLLBACK")
    return seconds


def vacuum(conn: psycopg.Connection) -> None:
    """Clear the dead rows earlier (rolled-back) statements left, so that neither side of a
    comparison pays for the other's garbage or meets autovacuum halfway."""
    conn.execute("VACUUM (ANALYZE) public.sales_pipeline, cdc.change_log")


def bulk_overhead(pair: Pair, rows: int, repeats: int) -> dict:
    with pair.connect("oltp") as conn:
        deals = conn.execute("SELECT count(*) FROM public.sales_pipeline").fetchone()[0]
        rows = min(rows, deals)
        result: dict = {"rows": rows}
        for kind in ("update", "insert"):
            on, off = [], []
            for _ in range(repeats):  # alternate, so drift hits both sides alike
                vacuum(conn)
                on.append(time_bulk(conn, kind, rows, capture=True))
                vacuum(conn)
                off.append(time_bulk(conn, kind, rows, capture=False))
            median_on, median_off = statistics.median(on), statistics.median(off)
            result[kind] = {
                "capture_on_s": on,
                "capture_off_s": off,
                "median_on_s": median_on,
                "median_off_s": median_off,
                # Speed with capture relative to without: 1.0 = no overhead.
                "ratio": median_off / median_on,
            }
        vacuum(conn)
    return result


PGBENCH_SETUP = """
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.deal_ids, bench.agent_ids, bench.product_ids, bench.account_ids;
CREATE TABLE bench.deal_ids AS
    SELECT row_number() OVER (ORDER BY opportunity_id)::int AS n, opportunity_id
      FROM public.sales_pipeline;
CREATE TABLE bench.agent_ids AS
    SELECT row_number() OVER (ORDER BY sales_agent_id)::int AS n, sales_agent_id AS id
      FROM public.sales_agents;
CREATE TABLE bench.product_ids AS
    SELECT row_number() OVER (ORDER BY product_id)::int AS n, product_id AS id
      FROM public.products;
CREATE TABLE bench.account_ids AS
    SELECT row_number() OVER (ORDER BY account_id)::int AS n, account_id AS id
      FROM public.accounts;
ALTER TABLE bench.deal_ids ADD PRIMARY KEY (n);
ALTER TABLE bench.agent_ids ADD PRIMARY KEY (n);
ALTER TABLE bench.product_ids ADD PRIMARY KEY (n);
ALTER TABLE bench.account_ids ADD PRIMARY KEY (n);
CREATE SEQUENCE IF NOT EXISTS bench.new_deal_seq;
ANALYZE bench.deal_ids, bench.agent_ids, bench.product_ids, bench.account_ids;
"""


def pgbench_tps(pgbench: str, pair: Pair, script: Path, seconds: int, defines: dict) -> dict:
    cmd = [pgbench, "-n", "-c", "2", "-j", "2", "-T", str(seconds), "-f", str(script)]
    for name, value in defines.items():
        cmd += ["-D", f"{name}={value}"]
    cmd.append(pair.oltp)
    out = subprocess.run(cmd, capture_output=True, text=True, env=pair.env)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
    tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", out.stdout, re.M)
    done = re.search(r"^number of transactions actually processed: (\d+)", out.stdout, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", out.stdout, re.M)
    if not tps:
        raise RuntimeError(f"pgbench: no tps in its output:\n{out.stdout}")
    return {
        "tps": float(tps.group(1)),
        "transactions": int(done.group(1)) if done else None,
        "failed": int(failed.group(1)) if failed else 0,
    }


def pgbench_overhead(pair: Pair, pgbench: str, seconds: int) -> dict:
    with pair.connect("oltp") as conn:
        conn.execute(PGBENCH_SETUP)
        counts = dict(
            zip(
                ("ndeals", "nagents", "nproducts", "naccounts"),
                conn.execute(
                    """SELECT (SELECT count(*) FROM bench.deal_ids),
                              (SELECT count(*) FROM bench.agent_ids),
                              (SELECT count(*) FROM bench.product_ids),
                              (SELECT count(*) FROM bench.account_ids)"""
                ).fetchone(),
                strict=True,
            )
        )
    scripts = {"update_stage": PGBENCH_UPDATE, "insert_deal": PGBENCH_INSERT}
    result: dict = {"seconds": seconds, "clients": 2, "order": "on, off, off, on"}
    for name, script in scripts.items():
        say(f"[capture] pgbench {name}: {seconds}s runs, capture on, off, off, on")
        runs: dict[str, list[dict]] = {"on": [], "off": []}
        for mode in ("on", "off", "off", "on"):  # ABBA: drift hits both sides alike
            with pair.connect("oltp") as conn:
                vacuum(conn)
                if mode == "off":
                    conn.execute("ALTER TABLE public.sales_pipeline DISABLE TRIGGER USER")
                try:
                    runs[mode].append(pgbench_tps(pgbench, pair, script, seconds, counts))
                finally:
                    if mode == "off":
                        conn.execute("ALTER TABLE public.sales_pipeline ENABLE TRIGGER USER")
        tps_on = statistics.mean(r["tps"] for r in runs["on"])
        tps_off = statistics.mean(r["tps"] for r in runs["off"])
        result[name] = {
            "capture_on": {"tps": tps_on, "runs": runs["on"]},
            "capture_off": {"tps": tps_off, "runs": runs["off"]},
            "ratio": tps_on / tps_off,
        }
    return result


# ---------------------------------------------------------------- report


def mb(kb: int) -> float:
    return kb / 1024


def build_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) rows of the Markdown table."""
    rows: list[tuple[str, str, str, str]] = []

    def add(figure: str, value: str, target: str = "", met: bool | None = None) -> None:
        rows.append((figure, value, target or "-", "-" if met is None else "yes" if met else "no"))

    scales = report["scales"]
    for s in scales:
        sc = f"scale {s['scale']:g}"
        g = s["generate"]
        add(
            f"generate rows/s ({sc}, {g['total_rows']:,} rows)",
            f"{g['rows_per_second']:,.0f} ({g['seconds']:.1f} s)",
        )
        il = s["initial_load"]
        runs = ", ".join(f"{r['before_validation_s']:.2f}" for r in il["runs"])
        bares = ", ".join(f"{r['total_s']:.2f}" for r in il["bare_runs"])
        vals = ", ".join(f"{r['validation_s']:.2f}" for r in il["runs"])
        add(
            f"initial load before validation, s ({sc}; runs {runs})",
            f"{il['best_before_validation_s']:.2f}",
        )
        add(f"initial load validation, s ({sc}; runs {vals})", f"{il['best_validation_s']:.2f}")
        add(
            f"bare bound (CTAS + PK + aggregate), s ({sc}; runs {bares})",
            f"{il['best_bare_s']:.2f}",
        )
        ratio = il["ratio_to_bare"]
        add(
            f"initial load / bare bound ({sc}, best of each)",
            f"{ratio:.2f}x",
            "<= 1.5x",
            ratio <= 1.5,
        )
        for k, inc in s["incremental"].items():
            target, met = "", None
            if int(k) == 10_000 and s["scale"] >= 1000:
                target, met = "< 2 s", inc["wall_s"] < 2
            add(
                f"incremental update, {int(k):,} changes, s "
                f"({sc}; simulate {inc['simulate_s']:.1f} s)",
                f"{inc['wall_s']:.2f}",
                target,
                met,
            )
        add(f"VACUUM (ANALYZE) after the initial load, s ({sc})", f"{s['vacuum_after_load_s']:.2f}")
        for view, v in s["views"].items():
            # Issue 13's bound, on the full read to the client as it was measured before.
            target, met = ("< 50 ms", v["median_ms"] < 50) if s["scale"] >= 1000 else ("", None)
            add(
                f"{view}, median of 5 reads ({sc}, {v['rows']:,} rows):"
                " to the client / on the server",
                f"{v['median_ms']:.1f} ms / {v.get('server_ms', 0):.1f} ms",
                target,
                met,
            )
        for q in s.get("as_of", []):
            target, met = ("< 50 ms", q["max_ms"] < 50) if s["scale"] >= 1000 else ("", None)
            add(
                f"{q['question']} ({sc}, {q['calls']} calls): median / slowest",
                f"{q['median_ms']:.1f} ms / {q['max_ms']:.1f} ms",
                target,
                met,
            )
        if a := s.get("archiving"):
            add_archiving(add, sc, a, s)
        size = s["size"]
        add(
            f"warehouse dwh tables per million facts ({sc}, {size['facts']:,} facts)",
            f"{size['dwh_mb_per_million_facts']:,.0f} MB",
        )
        add(
            f"warehouse database per million facts ({sc})",
            f"{size['database_mb_per_million_facts']:,.0f} MB "
            f"({size['database_bytes'] / 2**20:,.0f} MB in all)",
        )
    for k, ratio in report.get("incremental_scale_ratio", {}).items():
        a, b = report["scales"][0]["scale"], report["scales"][1]["scale"]
        add(
            f"incremental {int(k):,} changes: scale {b:g} / scale {a:g}",
            f"{ratio:.2f}x",
            "<= 1.3x" if int(k) == 10_000 else "",
            ratio <= 1.3 if int(k) == 10_000 else None,
        )
    cap = report["capture"]
    for kind in ("update", "insert"):
        c = cap["bulk"][kind]
        add(
            f"bulk {cap['bulk']['rows']:,}-row {kind.upper()}: speed with / without capture "
            f"(median {c['median_on_s']:.2f} s vs {c['median_off_s']:.2f} s)",
            f"{c['ratio']:.2f}x",
            ">= 0.67x (overhead <= 1.5x)",
            c["ratio"] >= 1 / 1.5,
        )
    for name in ("update_stage", "insert_deal"):
        c = cap["pgbench"][name]
        add(
            f"pgbench {name}, 2 clients: tps with / without capture "
            f"({c['capture_on']['tps']:,.0f} vs {c['capture_off']['tps']:,.0f})",
            f"{c['ratio']:.2f}x",
            ">= 0.8x",
            c["ratio"] >= 0.8,
        )
    rss = report["max_rss_mb"]
    add("peak RSS, b2bdwh generate", f"{rss['generate']:,.0f} MB")
    add("peak RSS, b2bdwh simulate", f"{rss['simulate']:,.0f} MB")
    add("peak RSS, b2bdwh migrate", f"{rss['migrate']:,.0f} MB")
    add("peak RSS, the bench itself", f"{rss['bench']:,.0f} MB")
    add("bench run time", f"{report['run_seconds']:.0f} s")
    return rows


def add_archiving(add: Callable[..., None], sc: str, a: dict, s: dict) -> None:
    """Issue 14's figures: the hot part before and after, archiving the first time and one
    month more, an incremental update and the views after."""

    def part(sizes: dict, name: str) -> str:
        return f"{sizes[name]['facts']:,} facts, {sizes[name]['bytes'] / 2**20:,.0f} MB"

    add(
        f"facts before archiving: hot / cold ({sc})",
        f"{part(a['before'], 'hot')} / {part(a['before'], 'cold')}",
    )
    add(
        f"facts after archiving before {a['horizon']} and a VACUUM"
        f" ({a['vacuum_after_first_s']:.1f} s): hot / cold ({sc})",
        f"{part(a['after'], 'hot')} / {part(a['after'], 'cold')}",
    )
    for key, label in (("first", "the first time"), ("month", "one month more")):
        r = a[key]
        steps = r["incremental_steps"]
        history = steps.get("dwh.load_deal_history", {}).get("seconds", 0.0)
        facts = steps.get("dwh.load_fact_sales_performance", {}).get("seconds", 0.0)
        add(
            f"archiving {label}, before {r['cut_off']} ({sc}, {r['archived']:,} deals):"
            " CRM routine / incremental update (history, fact steps) / horizon move"
            f" ({r['moved']:,} facts)",
            f"{r['source_s']:.1f} s / {r['incremental_s']:.1f} s ({history:.1f}, {facts:.1f})"
            f" / {r['move_s']:.1f} s",
        )
    inc = a["incremental_after"]
    k = inc["changes"]
    before = s["incremental"].get(str(k), {}).get("wall_s")
    add(
        f"incremental update, {k:,} changes, before / after archiving, s ({sc})",
        f"{before:.2f} / {inc['wall_s']:.2f}" if before else f"- / {inc['wall_s']:.2f}",
    )
    for view, v in a["views_after"].items():
        was = s["views"].get(view, {}).get("median_ms")
        add(
            f"{view} read whole, before / after archiving ({sc})",
            f"{was:.1f} ms / {v['median_ms']:.1f} ms"
            if was is not None
            else f"{v['median_ms']:.1f} ms",
        )


def markdown(report: dict) -> str:
    env = report["environment"]
    over = f", dates over {report['years']} years" if report.get("years") else ""
    lines = [
        f"# b2bdwh bench, scale {report['scale']:g}{over}",
        "",
        f"{env['date']}; {env['postgres']}; {env['cores']} cores; commit {env['git_commit']}",
        "",
        "| figure | value | target | met? |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in build_rows(report)]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=100, help="source scale (default 100)")
    p.add_argument(
        "--compare-scale",
        type=float,
        help="a second scale: generate, initial load and the same incremental updates there too",
    )
    p.add_argument(
        "--changes",
        default="",
        help="comma-separated K for the incremental updates "
        "(default 1000,10000 plus 100000 when the scale is 100 or less)",
    )
    p.add_argument("--with-100k", action="store_true", help="add K=100000 at any scale")
    p.add_argument(
        "--years",
        type=int,
        default=None,
        help="generate the sources with dates over this many years (b2bdwh generate --years)",
    )
    p.add_argument("--load-repeats", type=int, default=2, help="initial/bare loads (default 2)")
    p.add_argument("--bulk-rows", type=int, default=100_000, help="rows of the bulk statements")
    p.add_argument("--bulk-repeats", type=int, default=3, help="bulk repetitions (median)")
    p.add_argument("--pgbench-seconds", type=int, default=15, help="per pgbench run (default 15)")
    p.add_argument("--out", type=Path, default=BENCH / "out", help="output folder")
    p.add_argument(
        "--db-tag",
        default="",
        help="extra part of the database names, bench_oltp_<tag><scale> (default none)",
    )
    p.add_argument("--keep", action="store_true", help="leave the bench databases for inspection")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_cluster_env()
    psql, pgbench = find_psql(), find_pgbench()
    if args.changes:
        changes = [int(x) for x in args.changes.split(",") if x.strip()]
    else:
        changes = [1_000, 10_000]
        if args.with_100k or args.scale <= 100:
            changes.append(100_000)
    prefix = f"{args.db_tag}_" if args.db_tag else ""
    pairs = [Pair(args.scale, prefix)]
    if args.compare_scale:
        pairs.append(Pair(args.compare_scale, prefix))

    report: dict = {"scale": args.scale, "years": args.years, "changes": changes, "scales": []}
    try:
        for pair in pairs:
            report["scales"].append(run_scale(pair, changes, psql, args.load_repeats, args.years))
        main_pair = pairs[0]
        say(f"[capture] bulk {args.bulk_rows:,}-row UPDATE and INSERT, rolled back")
        report["capture"] = {
            "bulk": bulk_overhead(main_pair, args.bulk_rows, args.bulk_repeats),
            "pgbench": pgbench_overhead(main_pair, pgbench, args.pgbench_seconds),
        }
        with main_pair.connect("oltp") as conn:
            version = conn.execute("SELECT version()").fetchone()[0]
    finally:
        if not args.keep:
            for pair in pairs:
                pair.drop()

    if len(report["scales"]) == 2:
        a, b = report["scales"]
        report["incremental_scale_ratio"] = {
            k: b["incremental"][k]["wall_s"] / a["incremental"][k]["wall_s"]
            for k in a["incremental"]
        }
    kb = [s for s in report["scales"]]
    report["max_rss_mb"] = {
        "generate": mb(max(s["generate"]["max_rss_kb"] for s in kb)),
        "simulate": mb(
            max(i["simulate_max_rss_kb"] for s in kb for i in s["incremental"].values())
        ),
        "migrate": mb(max(s["migrate"]["max_rss_kb"] for s in kb)),
        "any_child": mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        "bench": mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }
    report["run_seconds"] = time.perf_counter() - started
    report["databases_kept"] = args.keep
    report["environment"] = {
        "postgres": version,
        "cores": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "scale": args.scale,
        "compare_scale": args.compare_scale,
    }
    text = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_scale_{tag_for(args.scale)}"
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(text)
    say(f"written: {args.out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
