"""`b2bdwh status`: is the warehouse healthy? Recent runs, the latest run's steps, the lag
behind the source, this warehouse as a consumer of the source's change log, failed DAG runs,
failed checks, recent errors and quarantined rows.

Exit codes, for a monitor: 0 healthy; 2 unhealthy, naming the reason; 1 only for a usage
error (an unknown option, a --max-lag that is not a duration, a malformed connection
string). Unhealthy is: the database cannot be reached or read; the latest run failed or was
interrupted (a step marked running that nobody executes); the lag (etl.v_freshness: the
age of the oldest committed source change not applied yet) exceeds --max-lag, by default
etl.config max_freshness_lag, or cannot be measured; the source no longer holds back the
changes this warehouse has not applied (it is not registered, or did not report for longer
than its retention) or has already purged some of them; the latest horizon move failed and
no initial load or horizon move ran since (some facts may be out of their part); the latest
Airflow run of a DAG
failed and no run of its pipeline succeeded since (read from Airflow's own metadata with
`airflow dags list-runs` when an AIRFLOW_HOME is set or the project's .airflow exists: a
run that failed before reaching the database, which is down or refused it, leaves no trace
in the warehouse).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from b2bdwh import settings
from b2bdwh.db import CliError, Unreachable, connect
from b2bdwh.summary import table

HELP = "print recent runs, lag behind the source, failed checks and errors; exit 2 if unhealthy"

UNHEALTHY = 2
USAGE_ERROR = 1
# The DAGs whose Airflow runs count, and the pipeline each runs.
DAG_PIPELINES = {
    "dwh_initial_load": "initial_load",
    "dwh_incremental_update": "incremental_update",
    "dwh_horizon_move": "horizon_move",
}
AIRFLOW_TIMEOUT = 120  # seconds for `airflow dags list-runs` on a busy machine

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
# The lag, one mechanism for the view a monitor reads and this command: etl.v_freshness.
FRESHNESS = """
SELECT f.applied_run_id, f.unapplied_changes, f.oldest_unapplied_at, f.lag, f.source_replaced,
       f.max_lag
  FROM etl.v_freshness AS f
"""
# When each pipeline last succeeded: a failed DAG run before that is superseded.
LAST_SUCCESS = """
SELECT r.pipeline, max(r.started_at) FROM etl.run AS r WHERE r.status = 'succeeded'
 GROUP BY r.pipeline
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
# Where the facts are stored: the horizon in force, the parts' sizes (the planner's estimate,
# its shards' on Citus: no count of millions of rows), and the latest run that places every
# fact.
STORAGE = """
SELECT s.cold_before::text, s.run_id,
       etl.estimated_rows('dwh.fact_sales_performance_hot'),
       etl.estimated_rows('dwh.fact_sales_performance_cold'),
       p.run_id, p.pipeline, p.status, coalesce(p.message, '')
  FROM etl.fact_storage AS s
  LEFT JOIN LATERAL (
      SELECT r.run_id, r.pipeline, r.status, r.message FROM etl.run AS r
       WHERE r.pipeline IN ('initial_load', 'horizon_move') ORDER BY r.run_id DESC LIMIT 1
  ) AS p ON true
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
    max_lag: dt.timedelta | None = None  # etl.config max_freshness_lag
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
    try:
        with conn.transaction():
            run_id, backlog, oldest, age, replaced, max_lag = conn.execute(FRESHNESS).fetchone()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0]
        return Lag(error=f"cannot read the source's change log: {first_line}")
    if run_id is None:
        return Lag(max_lag=max_lag, error="no run has applied a snapshot of the source yet")
    return Lag(
        backlog=backlog,
        oldest=oldest,
        age=age,
        applied_run=run_id,
        replaced=int(bool(replaced)),
        max_lag=max_lag,
    )


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


def find_airflow_home(option: str | None) -> Path | None:
    """Where Airflow keeps its runs: --airflow-home, else $AIRFLOW_HOME, else the project's
    .airflow (`make airflow`) when it holds a metadata database; '' turns the check off."""
    if option is not None:
        return Path(option) if option else None
    if "AIRFLOW_HOME" in os.environ:  # set empty: no Airflow to check
        return Path(os.environ["AIRFLOW_HOME"]) if os.environ["AIRFLOW_HOME"] else None
    default = settings.PROJECT_ROOT / ".airflow"
    return default if (default / "airflow.db").is_file() else None


def airflow_runs(home: Path) -> tuple[dict[str, dict], str | None]:
    """The latest finished run of each DAG, from Airflow's own metadata database through its
    command line (`airflow dags list-runs`, one process per DAG, side by side). Returns
    ({dag_id: run}, an error if Airflow could not be read)."""
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    airflow = Path(sys.executable).parent / "airflow"
    command = str(airflow) if airflow.exists() else "airflow"
    procs = {
        dag_id: subprocess.Popen(
            [command, "dags", "list-runs", dag_id, "-o", "json"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for dag_id in DAG_PIPELINES
    }
    latest: dict[str, dict] = {}
    errors: list[str] = []
    for dag_id, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=AIRFLOW_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            errors.append(f"{dag_id}: `airflow dags list-runs` took over {AIRFLOW_TIMEOUT} s")
            continue
        if proc.returncode != 0:
            if "does not exist in 'dag' table" in err:
                continue  # never parsed there: no run
            last = (err.strip().splitlines() or ["no output"])[-1]
            errors.append(f"{dag_id}: `airflow dags list-runs` exited {proc.returncode}: {last}")
            continue
        # Airflow may print warnings on stdout first: the JSON list is the last line.
        lists = [line for line in out.splitlines() if line.startswith("[{") or line == "[]"]
        try:
            runs = json.loads(lists[-1])
        except (IndexError, ValueError):
            errors.append(f"{dag_id}: `airflow dags list-runs` printed no JSON list")
            continue
        finished = [r for r in runs if r.get("state") in ("success", "failed")]
        if finished:
            latest[dag_id] = max(finished, key=lambda r: r.get("run_after") or "")
    return latest, ("; ".join(errors) or None)


def airflow_report(
    home: Path | None, last_success: dict[str, dt.datetime]
) -> tuple[list[str], list[str]]:
    """The lines of the Airflow section and the problems it finds: the latest finished run of a
    DAG failed, and no run of its pipeline succeeded in the warehouse since it started."""
    out = ["", "Airflow (latest finished run of each DAG):"]
    if home is None:
        out.append("  not checked: no AIRFLOW_HOME (set it, or --airflow-home DIR)")
        return out, []
    latest, error = airflow_runs(home)
    problems: list[str] = []
    if error:
        out.append(f"  unknown: {error}")
        problems.append(f"the Airflow runs in {home} cannot be read: {error}")
    for dag_id, pipeline in DAG_PIPELINES.items():
        run = latest.get(dag_id)
        if run is None:
            if dag_id not in (error or ""):
                out.append(f"  {dag_id}: no finished run")
            continue
        started = dt.datetime.fromisoformat(run.get("start_date") or run["run_after"])
        out.append(
            f"  {dag_id}: {run['state']}, run {run['run_id']}, started {started:%Y-%m-%d %H:%M:%S}"
        )
        succeeded = last_success.get(pipeline)
        if run["state"] == "failed" and (succeeded is None or succeeded < started):
            problems.append(
                f"the latest Airflow run of {dag_id} ({run['run_id']}, started"
                f" {started:%Y-%m-%d %H:%M:%S}) failed, and no {pipeline} run succeeded since:"
                f" see its task logs (airflow tasks states-for-dag-run {dag_id} {run['run_id']})"
            )
    return out, problems


def storage_report(row: tuple) -> tuple[list[str], list[str]]:
    """The lines on where the facts are stored, and the problem of a horizon move that did
    not finish (some facts may be in the other part than the horizon places them in)."""
    cold_before, set_by, hot, cold, run_id, pipeline, run_status, _message = row

    def estimate(n: int) -> str:
        return f"~{n:,}" if n >= 0 else "unknown (not analysed yet)"

    horizon = f"deals closed before {cold_before} are cold" if cold_before else "none: all hot"
    out = [
        "",
        "Fact storage (etl.fact_storage):",
        f"  horizon: {horizon}" + (f" (set by run {set_by})" if set_by else ""),
        f"  facts: hot {estimate(hot)}, cold {estimate(cold)} (estimates)",
    ]
    problems = []
    if pipeline == "horizon_move" and run_status == "failed":
        problems.append(
            f"the latest horizon move, run {run_id}, failed (its message is in the runs"
            " above): some facts may be in the other part than the horizon places them in;"
            " fix the cause, then CALL etl.run_horizon_move();"
        )
    return out, problems


def status(
    dsn: str,
    max_lag: str | None = None,
    runs_per_pipeline: int = 3,
    airflow_home: Path | None = None,
) -> Status:
    """The report and the reasons it is unhealthy (none: healthy). max_lag: None takes
    etl.config max_freshness_lag."""
    out: list[str] = []
    problems: list[str] = []
    with connect(dsn, autocommit=True) as conn:
        threshold = parse_max_lag(conn, max_lag) if max_lag is not None else None
        last_success = dict(conn.execute(LAST_SUCCESS).fetchall())
        airflow_lines, airflow_problems = airflow_report(airflow_home, last_success)
        latest = conn.execute(LATEST_RUN).fetchone()
        if latest is None:
            text = "\n".join(
                ["The warehouse has no run yet: CALL etl.run_initial_load();", *airflow_lines]
            )
            return Status(text, ["no run yet: the warehouse was never loaded", *airflow_problems])
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
        if threshold is None:
            threshold = lag.max_lag
            source = "etl.config max_freshness_lag"
        else:
            source = "--max-lag"
        measured = consumer.covered is not False and lag.age is not None
        if measured and threshold is not None and lag.age > threshold:
            problems.append(
                f"lag {duration(lag.age)} exceeds {source} {duration(threshold)}"
                f" ({lag.backlog:,} change(s) waiting)"
            )

        lines, found = consumer_report(consumer, window_start)
        out += lines
        problems += found
        out += airflow_lines
        problems += airflow_problems

        lines, found = storage_report(conn.execute(STORAGE).fetchone())
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
        out.append(f"Healthy (max lag {duration(threshold) or 'unknown'}).")
    return Status("\n".join(out), problems)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP}. Exit status: 0 healthy; 2 unhealthy (including a database that cannot be"
        " reached), each reason named; 1 only for a usage error."
    )
    parser.add_argument(
        "--max-lag",
        default=None,
        metavar="LAG",
        help="unhealthy when the oldest unapplied source change is older than this: seconds "
        "or an interval such as '15 minutes' (default: etl.config max_freshness_lag, "
        "30 minutes: twice the incremental DAG's interval)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        metavar="N",
        help="runs of each pipeline to list (default: 3)",
    )
    parser.add_argument(
        "--airflow-home",
        default=None,
        metavar="DIR",
        help="where Airflow keeps its runs, to count a failed DAG run (default: $AIRFLOW_HOME, "
        "else the project's .airflow if it exists; '' (or AIRFLOW_HOME set empty) to skip)",
    )
    # A usage error is 1 here: 2 means unhealthy to a monitor.
    parser.usage_exit_code = USAGE_ERROR  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    home = find_airflow_home(args.airflow_home)
    try:
        result = status(settings.olap_dsn(), args.max_lag, args.runs, home)
    except Unreachable as exc:
        raise CliError(f"UNHEALTHY: {exc}", exit_code=UNHEALTHY) from exc
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise CliError(
            f"UNHEALTHY: cannot read the warehouse's state: {first_line}", exit_code=UNHEALTHY
        ) from exc
    code = UNHEALTHY if result.problems else 0
    try:
        print(result.text, flush=True)
    except BrokenPipeError:  # `b2bdwh status | head -1`: the verdict stands, for pipefail
        from b2bdwh.cli import quiet_broken_pipe

        quiet_broken_pipe()
    return code
