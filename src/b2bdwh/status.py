"""`b2bdwh status`: is the warehouse healthy? Recent runs, the latest run's steps, the lag
behind the source, this warehouse as a consumer of the source's change log, failed checks,
recent errors and quarantined rows.

Exits 2, naming the reason, when the latest run failed or was interrupted (a step marked
running that nobody executes), when the oldest source change not yet applied is older
than --max-lag, when the lag cannot be measured, or when the source no longer holds back
the changes this warehouse has not applied (it is not registered, or did not report for
longer than its retention) or has already purged some of them: usable as a health check
(exit 0 means healthy).
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field

import psycopg

from b2bdwh import settings
from b2bdwh.db import CliError, connect
from b2bdwh.summary import table

HELP = "print recent runs, lag behind the source, failed checks and errors; exit 2 if unhealthy"

UNHEALTHY = 2
DEFAULT_MAX_LAG = "3600"

RUNS = """
SELECT run_id, pipeline, status, started_at, coalesce(finished_at, clock_timestamp()) - started_at,
       coalesce(message, '')
  FROM (SELECT r.*, row_number() OVER (PARTITION BY r.pipeline ORDER BY r.run_id DESC) AS n
          FROM etl.run AS r) AS r
 WHERE n <= %s
 ORDER BY pipeline, run_id DESC
"""
LATEST_RUN = """
SELECT run_id, pipeline, status, coalesce(message, '') FROM etl.run ORDER BY run_id DESC LIMIT 1
"""
STEPS = """
SELECT step, status, rows_in, rows_inserted, rows_updated, rows_deleted, rows_rejected,
       round(extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at)::numeric, 2)
  FROM etl.loading_metadata WHERE run_id = %s ORDER BY loading_metadata_id
"""
# The last applied snapshot: the next incremental window starts after it.
APPLIED = """
SELECT run_id, source_snapshot::text, pg_snapshot_xmin(source_snapshot)::text
  FROM etl.run WHERE window_applied ORDER BY run_id DESC LIMIT 1
"""
# Source changes that snapshot did not see: the incremental update's own rule. The xmin bound
# goes to the source as a parameter; the visibility test runs here on what comes back.
BACKLOG = """
SELECT count(*), min(c.changed_at), (SELECT s.taken_at FROM src.source_snapshot AS s),
       count(*) FILTER (WHERE c.operation = 'T')
  FROM src.change_log AS c
 WHERE c.txid >= %(xmin)s::xid8 AND NOT pg_visible_in_snapshot(c.txid, %(snapshot)s::pg_snapshot)
"""
# This warehouse as a consumer of the source's change log: its name, its row in cdc.consumer,
# the source's purge horizon and clock, all read in one statement (one remote snapshot).
CONSUMER = """
SELECT n.name, c.applied_xmin::text, c.retention, c.reported_at,
       c.reported_at >= s.taken_at - c.retention, s.taken_at, h.horizon::text, h.purged_at,
       h.horizon <= %(xmin)s::xid8
  FROM (SELECT etl.consumer_name() AS name) AS n
  CROSS JOIN src.source_snapshot AS s
  CROSS JOIN src.purge_horizon AS h
  LEFT JOIN src.cdc_consumer AS c ON c.consumer_name = n.name
"""
# The source's other readers: a row left behind (a warehouse gone, the old shared default name
# b2b_sales_olap) holds the purge back until it is older than its retention.
OTHER_CONSUMERS = """
SELECT c.consumer_name, c.applied_xmin::text, s.taken_at - c.reported_at,
       c.reported_at >= s.taken_at - c.retention
  FROM src.cdc_consumer AS c CROSS JOIN src.source_snapshot AS s
 WHERE c.consumer_name <> etl.consumer_name()
 ORDER BY c.consumer_name
"""
# Steps marked running while nobody holds the pipeline lock: their backend died (terminated,
# crashed, lost its client) and could not mark them; the next caller under the lock will.
INTERRUPTED_STEPS = """
SELECT string_agg(m.step, ', ' ORDER BY m.loading_metadata_id)
  FROM etl.loading_metadata AS m
 WHERE m.run_id = %s AND m.status = 'running' AND etl.pipeline_lock_holder() IS NULL
"""
FAILED_CHECKS = """
SELECT v.run_id, v.check_name, coalesce(v.expected, ''), coalesce(v.actual, '')
  FROM etl.validation_result AS v
 WHERE NOT v.passed AND v.run_id = ANY (%s)
 ORDER BY v.run_id DESC, v.validation_id
"""
ERRORS = """
SELECT to_char(e.logged_at, 'YYYY-MM-DD HH24:MI:SS'), e.run_id, e.procedure_name,
       coalesce(e.sqlstate, ''), left(regexp_replace(e.message, '\\s+', ' ', 'g'), 80)
  FROM etl.error_log AS e WHERE e.kind = 'error'
 ORDER BY e.error_id DESC LIMIT 10
"""
QUARANTINE = """
SELECT count(*),
       count(*) FILTER (WHERE e.run_id >= (SELECT max(r.run_id) FROM etl.run AS r
                                            WHERE r.pipeline = 'initial_load'
                                              AND r.status = 'succeeded'))
  FROM etl.error_log AS e WHERE e.kind = 'quarantine'
"""


@dataclass
class Lag:
    """How far the warehouse is behind the source."""

    backlog: int | None = None
    oldest: dt.datetime | None = None
    age: dt.timedelta | None = None
    applied_run: int | None = None
    replaced: int = 0  # TRUNCATEs among them: the source was replaced (import, generate)
    error: str | None = None


@dataclass
class Consumer:
    """This warehouse as a reader of the source's change log (cdc.consumer)."""

    name: str = ""
    reported_xmin: str | None = None  # None: no row under this name
    retention: dt.timedelta | None = None
    reported_at: dt.datetime | None = None
    holds_back: bool = False
    source_now: dt.datetime | None = None
    horizon: str = ""
    purged_at: dt.datetime | None = None
    covered: bool | None = None  # the next window's start is not below the horizon
    error: str | None = None
    others: list[tuple] = field(default_factory=list)  # (name, position, report age, holds back)


@dataclass
class Status:
    text: str
    problems: list[str] = field(default_factory=list)


def parse_max_lag(conn: psycopg.Connection, value: str) -> dt.timedelta:
    """Seconds ('3600', '90.5') or a PostgreSQL interval ('1 hour', '15 min')."""
    try:
        return dt.timedelta(seconds=float(value))
    except ValueError:
        pass
    try:
        with conn.transaction():
            return conn.execute("SELECT %s::interval", (value,)).fetchone()[0]
    except psycopg.DataError as exc:
        raise CliError(
            f"--max-lag {value!r}: expected seconds or an interval such as '15 minutes'"
        ) from exc


def duration(value: dt.timedelta | None) -> str:
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def measure_lag(conn: psycopg.Connection) -> Lag:
    applied = conn.execute(APPLIED).fetchone()
    if applied is None:
        return Lag(error="no run has applied a snapshot of the source yet")
    run_id, snapshot, xmin = applied
    try:
        with conn.transaction():
            backlog, oldest, source_now, replaced = conn.execute(
                BACKLOG, {"xmin": xmin, "snapshot": snapshot}
            ).fetchone()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0]
        return Lag(applied_run=run_id, error=f"cannot read the source's change log: {first_line}")
    # Age by the source's clock: changed_at was written by it.
    age = (source_now - oldest) if oldest is not None else dt.timedelta(0)
    return Lag(backlog=backlog, oldest=oldest, age=age, applied_run=run_id, replaced=replaced)


def measure_consumer(conn: psycopg.Connection, window_start: str | None) -> Consumer:
    try:
        with conn.transaction():
            row = conn.execute(CONSUMER, {"xmin": window_start}).fetchone()
            others = conn.execute(OTHER_CONSUMERS).fetchall()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0]
        return Consumer(error=f"cannot read the source's consumers: {first_line}")
    return Consumer(*row, others=others)


def consumer_report(consumer: Consumer, window_start: str | None) -> tuple[list[str], list[str]]:
    """The lines of the consumer section and the problems it finds."""
    out = ["", "Change consumer (this warehouse in the source's cdc.consumer):"]
    problems: list[str] = []
    if consumer.error:
        out.append(f"  unknown: {consumer.error}")
        return out, [consumer.error]
    way_out = "CALL etl.run_initial_load();"
    out.append(f"  name: {consumer.name}")
    if consumer.reported_xmin is None:
        out.append(
            "  position: not registered: the source does not hold back what it has not applied"
        )
    else:
        age = consumer.source_now - consumer.reported_at
        out.append(
            f"  position: next window from transaction {window_start or '(none applied)'};"
            f" reported {consumer.reported_xmin}, {duration(age)} ago"
            f" (retention {duration(consumer.retention)})"
        )
        if consumer.holds_back:
            until = consumer.reported_at + consumer.retention
            out.append(
                "  purge: held back for the changes it has not applied"
                f" (until {until:%Y-%m-%d %H:%M:%S} without a new report)"
            )
        else:
            out.append(
                f"  purge: DROPPED: no report for {duration(age)}, longer than its retention;"
                " the source purges changes it has not applied"
            )
    if consumer.horizon == "0":
        out.append("  purge horizon: 0 (nothing purged yet)")
    else:
        moved = f", last moved {consumer.purged_at:%Y-%m-%d %H:%M:%S}" if consumer.purged_at else ""
        out.append(f"  purge horizon: {consumer.horizon} (changes below it may be gone{moved})")
    for name, position, age, holds_back in consumer.others:
        verdict = "holds the purge back" if holds_back else "dropped (older than its retention)"
        out.append(
            f"  other reader: {name}, position {position}, reported {duration(age)} ago, {verdict}"
        )
    if window_start is None:
        return out, problems
    if consumer.covered is False:
        problems.append(
            f"the source purged changes this warehouse has not applied (purge horizon"
            f" {consumer.horizon} is past its next window's start {window_start}): the next"
            f" incremental update will be refused; {way_out}"
        )
    elif consumer.reported_xmin is None:
        problems.append(
            f"consumer {consumer.name} is not registered with the source, which may purge the"
            " changes it has not applied: run CALL etl.run_incremental_update(); now (it"
            f" registers), or {way_out} if that is refused"
        )
    elif not consumer.holds_back:
        problems.append(
            f"consumer {consumer.name} was dropped from the purge hold-back (no report for"
            f" longer than its retention {duration(consumer.retention)}): run"
            " CALL etl.run_incremental_update(); now (it reports again), or"
            f" {way_out} if that is refused"
        )
    return out, problems


def status(dsn: str, max_lag: str = DEFAULT_MAX_LAG, runs_per_pipeline: int = 3) -> Status:
    """The report and the reasons it is unhealthy (none: healthy)."""
    out: list[str] = []
    problems: list[str] = []
    with connect(dsn, autocommit=True) as conn:
        threshold = parse_max_lag(conn, max_lag)
        latest = conn.execute(LATEST_RUN).fetchone()
        if latest is None:
            return Status(
                "The warehouse has no run yet: CALL etl.run_initial_load();",
                ["no run yet: the warehouse was never loaded"],
            )
        run_id, pipeline, run_status, message = latest
        if run_status == "failed":
            problems.append(
                f"the latest run {run_id} ({pipeline}) failed" + (f": {message}" if message else "")
            )
        (interrupted,) = conn.execute(INTERRUPTED_STEPS, (run_id,)).fetchone()
        if interrupted:
            problems.append(
                f"the latest run {run_id} ({pipeline}) was interrupted: nobody executes its"
                f" running step {interrupted}; retry the step, start a new run, or"
                f" CALL etl.abandon_run({run_id});"
            )

        runs = conn.execute(RUNS, (runs_per_pipeline,)).fetchall()
        out.append(f"Recent runs (last {runs_per_pipeline} of each pipeline):")
        out.append(
            table(
                ("run", "pipeline", "status", "started", "duration", "message"),
                [
                    (r[0], r[1], r[2], f"{r[3]:%Y-%m-%d %H:%M:%S}", duration(r[4]), r[5][:70])
                    for r in runs
                ],
            )
        )

        out += ["", f"Steps of run {run_id} ({pipeline}, {run_status}):"]
        steps = conn.execute(STEPS, (run_id,)).fetchall()
        headers = ("step", "status", "in", "inserted", "updated", "deleted", "rejected", "seconds")
        out.append(table(headers, steps) if steps else "  (no step yet)")

        applied = conn.execute(APPLIED).fetchone()
        window_start = applied[2] if applied else None
        consumer = measure_consumer(conn, window_start)
        lag = measure_lag(conn)
        out += ["", "Lag behind the source:"]
        if consumer.covered is False:
            # The changes it would count are partly gone: no figure, the reason below.
            out.append("  unknown: the source purged changes not applied yet (see the consumer)")
        elif lag.error:
            out.append(f"  unknown: {lag.error}")
            problems.append(f"the lag cannot be measured: {lag.error}")
        elif lag.backlog == 0:
            out.append(f"  none: every committed source change is applied (run {lag.applied_run})")
        else:
            out.append(
                f"  {lag.backlog:,} source change(s) not applied yet; the oldest, from "
                f"{lag.oldest:%Y-%m-%d %H:%M:%S}, is {duration(lag.age)} old"
                f" (last applied: run {lag.applied_run})"
            )
            if lag.replaced:
                problems.append(
                    "the source was replaced (emptied and reloaded: b2bdwh import-csv or generate)"
                    f" after run {lag.applied_run}; an incremental update cannot apply that:"
                    " CALL etl.run_initial_load();"
                )
            if lag.age is not None and lag.age > threshold:
                problems.append(
                    f"lag {duration(lag.age)} exceeds --max-lag {duration(threshold)}"
                    f" ({lag.backlog:,} change(s) waiting)"
                )

        lines, found = consumer_report(consumer, window_start)
        out += lines
        problems += found

        checks = conn.execute(FAILED_CHECKS, ([r[0] for r in runs],)).fetchall()
        out += ["", "Failed validations of these runs:"]
        out.append(table(("run", "check", "expected", "found"), checks) if checks else "  none")

        errors = conn.execute(ERRORS).fetchall()
        out += ["", "Recent errors (etl.error_log, last 10):"]
        headers = ("logged", "run", "procedure", "sqlstate", "message")
        out.append(table(headers, errors) if errors else "  none")

        total, current = conn.execute(QUARANTINE).fetchone()
        out += [
            "",
            f"Quarantined rows: {current:,} since the latest successful initial load"
            f" ({total:,} in the whole log)",
        ]

    out.append("")
    if problems:
        out += ["UNHEALTHY:"] + [f"  - {p}" for p in problems]
    else:
        out.append(f"Healthy (max lag {duration(threshold)}).")
    return Status("\n".join(out), problems)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-lag",
        default=DEFAULT_MAX_LAG,
        metavar="LAG",
        help="unhealthy when the oldest unapplied source change is older than this: seconds "
        "or an interval such as '15 minutes' (default: 3600 s)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        metavar="N",
        help="runs of each pipeline to list (default: 3)",
    )


def run(args: argparse.Namespace) -> int:
    result = status(settings.olap_dsn(), args.max_lag, args.runs)
    print(result.text)
    return UNHEALTHY if result.problems else 0
