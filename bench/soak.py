"""make soak: the CRM writing at a steady rate while incremental updates run in a loop.

Several writers, each on its own connection, commit the ordinary transactions
`b2bdwh simulate` makes (b2bdwh.simulate.transactions, one seed per writer) at a
steady total rate, while one loop calls `CALL etl.run_incremental_update()`. When the
time is up the writers stop, one more run applies what is left, and then:

- the warehouse must show what a fresh initial load of the same source shows, and the
  source itself (b2bdwh.compare), and keep its own rules (aggregate, SCD2 periods);
- no change is lost: every cdc.change_log row written during the soak is seen by the
  snapshot of a run that applied its window;
- lag: for each change, the time from its changed_at in the source to the commit of the
  run that applied it (its aggregate step, where the window counts as applied).

Runs on databases of its own (soak_oltp_<tag>, soak_olap_<tag>, soak_fresh_<tag>),
dropped at the end unless --keep. Writes bench/out/soak.md and soak.json; exits 1 when a
change was lost, the warehouses differ, or a run failed.

    .venv/bin/python bench/soak.py --seconds 300 --scale 5 [--writers 4] [--rate 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
import run as bench  # bench/run.py: cluster settings, databases, child processes

from b2bdwh import compare, simulate


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Databases:
    tag: str
    oltp: str = ""
    olap: str = ""
    fresh: str = ""

    def __post_init__(self) -> None:
        self.oltp, self.olap, self.fresh = (
            f"soak_{kind}_{self.tag}" for kind in ("oltp", "olap", "fresh")
        )

    def dsn(self, which: str) -> str:
        return f"dbname={getattr(self, which)}"

    def b2bdwh(self, *args: str, olap: str | None = None) -> None:
        env = dict(os.environ)
        env["B2B_OLTP_DSN"] = self.dsn("oltp")
        env["B2B_OLAP_DSN"] = f"dbname={olap or self.olap}"
        bench.run_child([str(bench.B2BDWH), *args], env=env)

    def drop(self) -> None:
        for name in (self.fresh, self.olap, self.oltp):
            bench.drop_database(name)


# ---------------------------------------------------------------- the writers


@dataclass
class Writer:
    """One CRM writer: its transactions, paced at `rate` per second."""

    dsn: str
    seed: int
    rate: float
    budget: int
    transactions: int = 0
    changes: int = 0
    aborted: Counter = field(default_factory=Counter)
    error: str | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("SET lock_timeout = '10s'")
                pending = simulate.transactions(conn, self.budget, self.seed)
                next_at = time.monotonic()
                for tx in pending:
                    if stop.wait(max(0.0, next_at - time.monotonic())):
                        break
                    # Steady, not bursty: a writer that fell behind does not catch up.
                    next_at = max(next_at + 1 / self.rate, time.monotonic())
                    try:
                        with conn.transaction():
                            for change in tx:
                                conn.execute(change.query, change.params)
                    except (
                        psycopg.errors.DeadlockDetected,
                        psycopg.errors.LockNotAvailable,
                        psycopg.errors.SerializationFailure,
                    ) as exc:
                        # Writers share the deals: two may pick the same rows in another
                        # order. The CRM user would retry; here the transaction is dropped.
                        self.aborted[type(exc).__name__] += 1
                        continue
                    self.transactions += 1
                    self.changes += len(tx)
                else:
                    self.error = f"ran out of transactions after {self.transactions}"
        except Exception as exc:  # reported, and fails the soak
            self.error = f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- the update loop


@dataclass
class Runner:
    dsn: str
    interval: float
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run_once(self, conn: psycopg.Connection) -> None:
        started = time.perf_counter()
        try:
            conn.execute("CALL etl.run_incremental_update()")
        except psycopg.Error as exc:
            self.errors.append(f"{type(exc).__name__}: {str(exc).strip()}")
            return
        self.seconds.append(time.perf_counter() - started)

    def loop(self, stop: threading.Event) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            while not stop.is_set():
                self.run_once(conn)
                if conn.broken:
                    break
                stop.wait(self.interval)


# ---------------------------------------------------------------- measures


APPLIED_RUNS = """
SELECT r.run_id, r.source_snapshot::text, m.finished_at
  FROM etl.run AS r
  JOIN etl.loading_metadata AS m
    ON m.run_id = r.run_id AND m.step = 'dwh.load_fact_sales_monthly_aggregate'
 WHERE r.status = 'succeeded' OR r.window_applied
 ORDER BY r.run_id
"""

# Each change of the soak and the first applied run whose snapshot saw its transaction:
# that run applied it (each run applies what its snapshot sees and the previous did not).
CHANGE_ARRIVALS = """
WITH runs AS (
    SELECT run_id, snap::pg_snapshot AS snap, applied_at
      FROM unnest(%(ids)s::bigint[], %(snaps)s::text[], %(at)s::timestamptz[])
           AS r(run_id, snap, applied_at)
), arrivals AS (
    SELECT c.change_id, c.changed_at, a.run_id, a.applied_at
      FROM cdc.change_log AS c
      LEFT JOIN LATERAL (
          SELECT r.run_id, r.applied_at FROM runs AS r
           WHERE pg_visible_in_snapshot(c.txid, r.snap)
           ORDER BY r.run_id LIMIT 1
      ) AS a ON TRUE
     WHERE c.change_id > %(after)s
)
SELECT count(*),
       count(*) FILTER (WHERE run_id IS NULL),
       min(changed_at), max(changed_at),
       count(DISTINCT run_id),
       extract(epoch FROM max(applied_at - changed_at)),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - changed_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - changed_at))
  FROM arrivals
"""


def change_arrivals(dbs: Databases, after: int) -> dict:
    with psycopg.connect(dbs.dsn("olap")) as conn:
        runs = conn.execute(APPLIED_RUNS).fetchall()
    with psycopg.connect(dbs.dsn("oltp")) as conn:
        row = conn.execute(
            CHANGE_ARRIVALS,
            {
                "ids": [r[0] for r in runs],
                "snaps": [r[1] for r in runs],
                "at": [r[2] for r in runs],
                "after": after,
            },
        ).fetchone()
    total, lost, first, last, applying_runs, lag_max, lag_p50, lag_p95 = row
    return {
        "after_change_id": after,
        "changes_logged": total,
        "lost_changes": lost,
        "first_change_at": first,
        "last_change_at": last,
        "runs_that_applied_changes": applying_runs,
        "lag_max_s": float(lag_max or 0),
        "lag_p50_s": float(lag_p50 or 0),
        "lag_p95_s": float(lag_p95 or 0),
    }


def run_figures(dbs: Databases, first_run: int) -> dict:
    with psycopg.connect(dbs.dsn("olap")) as conn:
        statuses = dict(
            conn.execute(
                "SELECT status, count(*) FROM etl.run WHERE run_id > %s GROUP BY 1", (first_run,)
            ).fetchall()
        )
        windows = [
            r[0]
            for r in conn.execute(
                "SELECT changes_in_window FROM etl.run WHERE run_id > %s AND status = 'succeeded'",
                (first_run,),
            )
        ]
    return {
        "statuses": statuses,
        "window_changes_mean": statistics.fmean(windows) if windows else 0,
        "window_changes_max": max(windows, default=0),
    }


# ---------------------------------------------------------------- the soak


def soak(args: argparse.Namespace) -> dict:
    dbs = Databases(f"{args.db_tag + '_' if args.db_tag else ''}{bench.tag_for(args.scale)}")
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "databases": asdict(dbs)}
    say(f"[soak] fresh databases {dbs.oltp}, {dbs.olap}, {dbs.fresh}; migrate, generate")
    dbs.drop()
    dbs.b2bdwh("migrate")
    dbs.b2bdwh("migrate", "--target", "olap", olap=dbs.fresh)
    with psycopg.connect(dbs.dsn("fresh"), autocommit=True) as conn:
        conn.execute("UPDATE etl.config SET value = 'soak_fresh' WHERE key = 'consumer_name'")
    dbs.b2bdwh("generate", "--scale", f"{args.scale:g}")
    with psycopg.connect(dbs.dsn("olap"), autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CALL etl.run_initial_load()")
        first_run = conn.execute("SELECT max(run_id) FROM etl.run").fetchone()[0]
    with psycopg.connect(dbs.dsn("oltp")) as conn:
        after = conn.execute("SELECT coalesce(max(change_id), 0) FROM cdc.change_log").fetchone()[0]

    per_writer = args.rate / args.writers
    budget = int(per_writer * args.seconds * 2) + 100  # more than the writer can commit
    writers = [
        Writer(dbs.dsn("oltp"), seed=i + 1, rate=per_writer, budget=budget)
        for i in range(args.writers)
    ]
    runner = Runner(dbs.dsn("olap"), args.interval)
    stop_writers, stop_runner = threading.Event(), threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop_writers,)) for w in writers]
    loop = threading.Thread(target=runner.loop, args=(stop_runner,))
    say(
        f"[soak] {args.seconds} s: {args.writers} writers at {args.rate:g} transactions/s,"
        f" incremental updates every {args.interval:g} s"
    )
    started = time.monotonic()
    for t in threads:
        t.start()
    loop.start()
    while (elapsed := time.monotonic() - started) < args.seconds:
        time.sleep(min(10.0, args.seconds - elapsed))
        changes = sum(w.changes for w in writers)
        say(
            f"[soak] {time.monotonic() - started:,.0f} s: {changes:,} changes committed,"
            f" {len(runner.seconds)} runs, {len(runner.errors)} failed"
        )
        if any(w.error for w in writers) or not loop.is_alive():
            break
    stop_writers.set()
    for t in threads:
        t.join()
    writing_seconds = time.monotonic() - started
    stop_runner.set()
    loop.join()
    say("[soak] writers stopped; a final run, then a fresh initial load to compare")
    with psycopg.connect(dbs.dsn("olap"), autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        runner.run_once(conn)
    with psycopg.connect(dbs.dsn("fresh"), autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CALL etl.run_initial_load()")

    incremental = compare.live_content(dbs.dsn("olap"))
    differences = compare.content_differences(
        incremental, compare.live_content(dbs.dsn("fresh"))
    ) + compare.content_differences(
        incremental, compare.source_content(dbs.dsn("oltp")), ("incremental", "source")
    )
    arrivals = change_arrivals(dbs, after)
    transactions = sum(w.transactions for w in writers)
    changes = sum(w.changes for w in writers)
    report.update(
        seconds=writing_seconds,
        writers={
            "count": args.writers,
            "transactions": transactions,
            "changes": changes,
            "transactions_per_s": transactions / writing_seconds,
            "changes_per_s": changes / writing_seconds,
            "aborted": dict(sum((w.aborted for w in writers), Counter())),
            "errors": [w.error for w in writers if w.error],
        },
        logged_changes_per_s=arrivals["changes_logged"] / writing_seconds,
        arrivals=arrivals,
        runs={
            "completed": len(runner.seconds),
            "failed": runner.errors,
            "seconds_median": statistics.median(runner.seconds) if runner.seconds else None,
            "seconds_max": max(runner.seconds, default=None),
            **run_figures(dbs, first_run),
        },
        differences=differences,
        consistency_problems=compare.consistency_problems(dbs.dsn("olap")),
    )
    report["passed"] = not (
        arrivals["lost_changes"]
        or differences
        or report["consistency_problems"]
        or runner.errors
        or report["writers"]["errors"]
    )
    if not args.keep:
        dbs.drop()
    return report


def markdown(report: dict) -> str:
    env, w, a, r = report["environment"], report["writers"], report["arrivals"], report["runs"]
    aborted = ", ".join(f"{k} {v}" for k, v in w["aborted"].items()) or "none"
    rows = [
        ("duration of writing", f"{report['seconds']:,.0f} s"),
        ("writers (connections)", f"{w['count']}"),
        ("committed transactions", f"{w['transactions']:,} ({w['transactions_per_s']:,.1f}/s)"),
        ("sustained changes (simulate's count)", f"{w['changes']:,} ({w['changes_per_s']:,.1f}/s)"),
        (
            "changes captured in cdc.change_log",
            f"{a['changes_logged']:,} ({report['logged_changes_per_s']:,.1f}/s)",
        ),
        ("transactions dropped (deadlock, lock timeout)", aborted),
        ("incremental runs", f"{r['completed']:,} succeeded, {len(r['failed'])} failed"),
        ("runs that applied changes", f"{a['runs_that_applied_changes']:,}"),
        (
            "run time, median / max",
            f"{r['seconds_median'] or 0:.2f} s / {r['seconds_max'] or 0:.2f} s",
        ),
        (
            "changes per window, mean / max",
            f"{r['window_changes_mean']:,.0f} / {r['window_changes_max']:,}",
        ),
        (
            "lag, change in the source to applied in the warehouse: median / p95 / max",
            f"{a['lag_p50_s']:.2f} s / {a['lag_p95_s']:.2f} s / {a['lag_max_s']:.2f} s",
        ),
        ("lost changes", f"{a['lost_changes']:,}"),
        ("differences from a fresh initial load or the source", f"{len(report['differences'])}"),
        ("consistency problems", f"{len(report['consistency_problems'])}"),
    ]
    lines = [
        f"# b2bdwh soak, scale {report['scale']:g}, {report['args']['seconds']} s",
        "",
        f"{env['date']}; {env['postgres']}; {env['cores']} cores; commit {env['git_commit']}",
        "",
        f"Result: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {a_} | {b_} |" for a_, b_ in rows),
    ]
    for name in ("differences", "consistency_problems"):
        lines += [f"- {name}: {p}" for p in report[name][:20]]
    lines += [f"- failed run: {e}" for e in r["failed"][:20]]
    lines += [f"- writer error: {e}" for e in w["errors"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300, help="how long the writers write")
    p.add_argument("--scale", type=float, default=5, help="source scale (default 5)")
    p.add_argument("--writers", type=int, default=4, help="writer connections (default 4)")
    p.add_argument(
        "--rate", type=float, default=40, help="transactions per second, all writers (40)"
    )
    p.add_argument("--interval", type=float, default=2, help="seconds between incremental runs (2)")
    p.add_argument("--out", type=Path, default=bench.BENCH / "out", help="output folder")
    p.add_argument("--db-tag", default="", help="extra part of the database names")
    p.add_argument("--keep", action="store_true", help="leave the soak databases")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.writers < 1 or args.rate <= 0 or args.interval < 0:
        p.error("--seconds, --writers and --rate must be positive, --interval not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.load_cluster_env()
    report = soak(args)
    with psycopg.connect(bench.admin_dsn()) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
    report["scale"] = args.scale
    report["environment"] = {
        "postgres": version,
        "cores": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": bench.git_commit(),
    }
    text = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.md").write_text(text)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(text)
    say(f"written: {args.out / 'soak'}.md and .json")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
