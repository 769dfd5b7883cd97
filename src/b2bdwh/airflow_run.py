"""`b2bdwh airflow`: the project's DAGs in a real, local Airflow.

- `b2bdwh airflow env` prints export lines that point Airflow at this checkout:
  AIRFLOW_HOME (default <project>/.airflow), the dags/ folder, a SQLite
  metadata database inside AIRFLOW_HOME, no example DAGs, and the connections
  `b2b_sales` and `b2b_sales_olap` built from the settings in use (for the
  `airflow` command line: `airflow dags trigger ...`).
- `b2bdwh airflow serve` is `make airflow`: with the same settings, it creates
  or upgrades the metadata database, stores the two connections in it (so the
  UI lists them, rewritten from the settings at every start), then becomes
  `airflow standalone` (API server and UI, scheduler, DAG processor,
  triggerer) on 127.0.0.1 and the port given. Nothing else listens: the scheduler's and
  the triggerer's log servers (ports 8793 and 8794) are not started, since Airflow 3
  binds them to every interface with no setting to change that (airflow.utils.serve_logs
  passes host=""); on one machine the API server reads the task logs from AIRFLOW_HOME/logs
  itself. standalone starts each component as `airflow` from PATH, so a small wrapper
  first on PATH (AIRFLOW_HOME/bin/airflow) adds Airflow's own --skip-serve-logs to those two.
- `b2bdwh airflow test DAG_ID` runs one DAG end to end with Airflow's own
  `dag.test()` (what `airflow dags test` runs) against a throwaway metadata
  database created on the fly, prints each task's state and duration as it
  ends, and exits non-zero naming the failed task and its error.

Airflow reads its configuration once, when it is first imported, so the run
happens in a child process started with the environment already set: this
module run as a script (`python -m b2bdwh.airflow_run SPEC FD`). The child
reports to the parent in JSON lines on a pipe; Airflow's own log goes to
AIRFLOW_HOME/dag_test.log (or to stderr with --verbose).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import conninfo

from b2bdwh import settings
from b2bdwh.db import CliError

HELP = "the DAGs in a local Airflow: `serve` (the UI), `env` (for the airflow CLI), `test DAG_ID`"

DAGS_FOLDER = settings.PROJECT_ROOT / "dags"
DEFAULT_HOME = settings.PROJECT_ROOT / ".airflow"
LOG_NAME = "dag_test.log"
SETUP_LOG_NAME = "serve_setup.log"
DEFAULT_PORT = 8080
# Written by the simple auth manager when `airflow standalone` first starts: user admin.
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
# Airflow connection id -> the setting that gives its libpq connection string. The DAGs
# run the warehouse's pipeline as the ETL role.
CONNECTIONS: dict[str, Callable[[], str]] = {
    "b2b_sales": settings.oltp_dsn,
    "b2b_sales_olap": settings.pipeline_dsn,
}
# libpq settings that fill in what a connection string leaves out.
LIBPQ_DEFAULTS = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    env = actions.add_parser(
        "env",
        help="print export lines for AIRFLOW_HOME, the DAGs folder and the two connections",
        description="Print export lines for `eval` before running the `airflow` command line.",
    )
    env.add_argument(
        "--airflow-home",
        type=Path,
        metavar="DIR",
        default=DEFAULT_HOME,
        help=f"AIRFLOW_HOME, where its metadata database lives (default {DEFAULT_HOME})",
    )
    env.set_defaults(airflow_action=run_env)

    serve = actions.add_parser(
        "serve",
        help="the Airflow UI with the DAGs and both connections: airflow standalone (make airflow)",
        description="Prepare the metadata database and the connections, then run airflow "
        "standalone on 127.0.0.1. Stop it with Ctrl-C.",
    )
    serve.add_argument(
        "--airflow-home",
        type=Path,
        metavar="DIR",
        default=DEFAULT_HOME,
        help=f"AIRFLOW_HOME: metadata database, logs, password file (default {DEFAULT_HOME})",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the port of the UI and API (default {DEFAULT_PORT})",
    )
    serve.set_defaults(airflow_action=run_serve)

    test = actions.add_parser(
        "test",
        help="run one DAG end to end through Airflow with a throwaway metadata database",
        description="Run one DAG end to end with dag.test(); exit 1 when the DAG run failed.",
    )
    test.add_argument("dag_id", metavar="DAG_ID", help="e.g. dwh_initial_load")
    test.add_argument(
        "--conf", default="{}", metavar="JSON", help="DAG run conf, e.g. '{\"batch_size\": 5000}'"
    )
    test.add_argument(
        "--airflow-home",
        type=Path,
        metavar="DIR",
        help="use (and keep) this AIRFLOW_HOME instead of a temporary one",
    )
    test.add_argument(
        "--retry-delay",
        type=float,
        metavar="SECONDS",
        help="override every task's retry delay (tests of failures; default: the DAG's own)",
    )
    test.add_argument(
        "-v", "--verbose", action="store_true", help="show Airflow's own log on stderr"
    )
    test.set_defaults(airflow_action=run_test)


def run(args: argparse.Namespace) -> int:
    return int(args.airflow_action(args) or 0)


# --- the environment --------------------------------------------------------------------------


def connection_json(dsn: str) -> str:
    """An Airflow connection, in the JSON form of AIRFLOW_CONN_<ID>, for a libpq connection
    string. PGHOST, PGPORT and PGUSER fill in what it leaves out, as libpq would; a host that
    is a directory (a Unix socket) is kept as it is: the postgres hook hands it to libpq."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise CliError(f"not a libpq connection string: {dsn!r} ({exc})") from exc
    for key, variable in LIBPQ_DEFAULTS.items():
        if not params.get(key) and os.environ.get(variable):
            params[key] = os.environ[variable]
    conn: dict[str, Any] = {"conn_type": "postgres"}
    for key, field in (("host", "host"), ("user", "login"), ("password", "password")):
        if params.get(key):
            conn[field] = params.pop(key)
    if str(params.get("port", "")).isdigit():
        conn["port"] = int(params.pop("port"))
    if params.get("dbname"):
        conn["schema"] = params.pop("dbname")
    extra = {key: str(value) for key, value in params.items() if value is not None}
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def airflow_environment(home: Path) -> dict[str, str]:
    """Settings that make Airflow use this checkout's DAGs, a SQLite metadata database in
    `home`, and the project's connections."""
    home = home.expanduser().resolve()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # The UI of `make airflow` is for this machine only.
        "AIRFLOW__API__HOST": "127.0.0.1",
    }
    for conn_id, dsn in CONNECTIONS.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = connection_json(dsn())
    return env


def run_env(args: argparse.Namespace) -> int:
    for name, value in airflow_environment(args.airflow_home).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


# --- b2bdwh airflow serve -------------------------------------------------------------------

# standalone runs `airflow scheduler` and `airflow triggerer` from PATH; this wrapper, first
# on PATH, gives them --skip-serve-logs (their log servers would listen on every interface).
COMPONENT_WRAPPER = """#!/bin/sh
# Written by `b2bdwh airflow serve`: the scheduler and the triggerer without their log
# servers, which Airflow binds to every interface; anything else goes to Airflow as is.
case "$1" in
    scheduler|triggerer) exec {airflow} "$@" --skip-serve-logs ;;
esac
exec {airflow} "$@"
"""


def write_component_wrapper(home: Path) -> Path:
    """AIRFLOW_HOME/bin/airflow, the wrapper above around this venv's airflow; returns its
    directory."""
    bindir = home / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    wrapper = bindir / "airflow"
    airflow = shlex.quote(str(Path(sys.executable).parent / "airflow"))
    wrapper.write_text(COMPONENT_WRAPPER.format(airflow=airflow))
    wrapper.chmod(0o755)
    return bindir


def serve_environment(home: Path, port: int) -> dict[str, str]:
    """The environment of `airflow standalone` for this checkout: airflow_environment() without
    the AIRFLOW_CONN_* variables (the connections live in the metadata database, where the UI
    shows them and edits take effect), on `port`."""
    env = {**os.environ, **airflow_environment(home)}
    env.pop("AIRFLOW_CONFIG", None)  # airflow.cfg comes from the AIRFLOW_HOME above
    for conn_id in CONNECTIONS:
        env.pop(f"AIRFLOW_CONN_{conn_id.upper()}")
    env["AIRFLOW__API__PORT"] = str(port)
    # Task processes report to the Execution API of this server, not to a default :8080.
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
    env["AIRFLOW__LOGGING__COLORED_CONSOLE_LOG"] = "False"
    # The DAGs are chains run one at a time: a few LocalExecutor workers, not the default 32.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    # The DAGs arrive unpaused, so the incremental DAG's first run starts as soon as the
    # scheduler is up, which can be before the API server listens, and the API server's
    # first requests take seconds (it builds its routes) or, on a busy two-core machine,
    # tens of seconds. Airflow's defaults (5 tries, a 5 s timeout) then kill that first
    # task before it runs: wait for the server instead.
    env.setdefault("AIRFLOW__WORKERS__EXECUTION_API_RETRIES", "10")
    env.setdefault("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "60")
    # standalone starts each component as `airflow` from PATH: the wrapper around this venv's.
    path = [str(home.expanduser().resolve() / "bin"), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    return env


def run_serve(args: argparse.Namespace) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError as exc:
            raise CliError(
                f"port {args.port} is taken ({exc.strerror}): another Airflow? "
                "Choose another with --port (make airflow AIRFLOW_PORT=...)."
            ) from exc
    home = args.airflow_home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    write_component_wrapper(home)
    env = serve_environment(home, args.port)
    connections = {conn_id: connection_json(dsn()) for conn_id, dsn in CONNECTIONS.items()}
    print(f"Airflow in {home}: metadata database and connections {', '.join(connections)}")
    started = time.monotonic()
    _run_child(
        {"action": "setup", "connections": connections},
        env,
        home / SETUP_LOG_NAME,
        verbose=False,
        label="airflow serve",
    )
    print(f"  ready in {time.monotonic() - started:.1f}s; starting airflow standalone")
    print(
        f"UI: http://127.0.0.1:{args.port}  user admin, password in {home / PASSWORDS_FILE}"
        " (written at the first start). Ctrl-C stops every component.",
        flush=True,
    )
    os.execvpe("airflow", ["airflow", "standalone"], env)


# --- b2bdwh airflow test: the parent ----------------------------------------------------------


def run_test(args: argparse.Namespace) -> int:
    try:
        conf = json.loads(args.conf)
    except ValueError as exc:
        raise CliError(f"--conf is not valid JSON: {exc}") from exc
    if not isinstance(conf, dict):
        raise CliError("--conf must be a JSON object, e.g. '{\"batch_size\": 5000}'")
    throwaway = args.airflow_home is None
    home = Path(tempfile.mkdtemp(prefix="b2bdwh-airflow-")) if throwaway else args.airflow_home
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **airflow_environment(home)}
    env["AIRFLOW__LOGGING__COLORED_CONSOLE_LOG"] = "False"
    env.pop("AIRFLOW_CONFIG", None)  # airflow.cfg comes from the AIRFLOW_HOME above
    spec = {"action": "test", "dag_id": args.dag_id, "conf": conf, "retry_delay": args.retry_delay}

    print(f"{args.dag_id}: running through Airflow, metadata database in {home}", flush=True)
    started = time.monotonic()
    failed = True
    try:
        result = _run_child(spec, env, home / LOG_NAME, verbose=args.verbose, label=args.dag_id)
        failed = result["state"] != "success"
        log = None if args.verbose else home / LOG_NAME
        return _report(args.dag_id, result, time.monotonic() - started, log)
    finally:
        if throwaway and not failed:
            shutil.rmtree(home, ignore_errors=True)


def _run_child(
    spec: dict, env: dict[str, str], log_path: Path, *, verbose: bool, label: str
) -> dict:
    """Run `spec` in a child process, printing its task events; return its result event."""
    read_fd, write_fd = os.pipe()
    with open(log_path, "w") as log:
        out = sys.__stderr__.fileno() if verbose else log
        child = subprocess.Popen(
            [sys.executable, "-m", "b2bdwh.airflow_run", json.dumps(spec), str(write_fd)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=(write_fd,),
        )
    os.close(write_fd)
    result: dict | None = None
    error: str | None = None
    with os.fdopen(read_fd) as events:
        for line in events:
            event = json.loads(line)
            if event["event"] == "setup":
                print(f"Airflow {event['version']} set up in {event['seconds']:.1f}s", flush=True)
            elif event["event"] == "task":
                print(_task_line(event), flush=True)
            elif event["event"] == "result":
                result = event
            elif event["event"] == "error":
                error = event["message"]
    code = child.wait()
    if result is None:
        where = "" if verbose else f"\n  Airflow's log: {log_path}"
        raise CliError(f"{label}: {error or f'the Airflow process exited with code {code}'}{where}")
    return result


def _task_line(event: dict) -> str:
    line = f"  {event['task_id']:<40} {event['state']:<15} {_seconds(event.get('seconds'))}"
    if event["state"] == "up_for_retry":
        line += f"  try {event['try_number']} of {event['max_tries'] + 1}: {event['error']}"
    elif event.get("error"):
        line += f"  {event['error']}"
    return line


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:7.2f}s"


def _report(dag_id: str, result: dict, elapsed: float, log: Path | None) -> int:
    for task in result["tasks"]:
        if not task["reported"]:  # never ran: upstream failed, or still waiting
            print(_task_line({**task, "state": task["state"] or "not run"}))
    summary = f"{dag_id}: run {result['run_id']} {result['state']} in {elapsed:.1f}s"
    if result["state"] == "success":
        print(summary)
        return 0
    failures = [t for t in result["tasks"] if t["state"] == "failed"]
    if failures:
        summary += "; " + "; ".join(
            f"task {t['task_id']} failed after {t['try_number']} tries: "
            f"{t['error'] or 'see the log'}"
            if t["try_number"] > 1
            else f"task {t['task_id']} failed: {t['error'] or 'see the log'}"
            for t in failures
        )
    raise CliError(summary + (f"\n  Airflow's log: {log}" if log else ""))


# --- the child: Airflow itself ----------------------------------------------------------------

_events: TextIO | None = None
_reported: dict[str, dict] = {}


def _emit(**event: Any) -> None:
    assert _events is not None
    _events.write(json.dumps(event, default=str) + "\n")
    _events.flush()


def _error_text(error: BaseException | str | None) -> str | None:
    """One line for a person: the message, its SQLSTATE and hint when it came from PostgreSQL."""
    if error is None:
        return None
    if isinstance(error, str):
        return error.strip().splitlines()[0] if error.strip() else None
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        text = f"{error.diag.message_primary} (SQLSTATE {error.sqlstate})"
        if error.diag.message_hint:
            text += f" HINT: {error.diag.message_hint}"
        return text
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _callback(state: str) -> Callable[[dict], None]:
    def report(context: dict) -> None:
        ti = context["ti"]
        seconds = None
        if ti.start_date is not None:
            seconds = (datetime.now(UTC) - ti.start_date).total_seconds()
        event = {
            "event": "task",
            "task_id": ti.task_id,
            "state": state,
            "try_number": ti.try_number,
            "max_tries": ti.max_tries,
            "seconds": seconds,
            "error": _error_text(context.get("exception")) if state != "success" else None,
        }
        _reported[ti.task_id] = event
        _emit(**event)

    report.__name__ = f"b2bdwh_report_{state}"
    return report


def _as_list(callbacks: Any) -> list:
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]


def _setup_for_serve(spec: dict[str, Any]) -> int:
    """What `airflow standalone` needs before it starts: the metadata database (as standalone
    itself would create it), and the connections, written over whatever they were."""
    from airflow.models.connection import Connection
    from airflow.utils import db
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    db.initdb()
    # Write-ahead logging: the components' reads no longer wait for a write, nor a write's
    # commit for them (the mode is kept in the file). Writers still queue: SQLite takes one at
    # a time, and a write that waits more than 5 s fails ("database is locked": a 500 from the
    # API). Not a longer wait: the API server's async routes wait on its event loop, so the
    # writer holding the lock cannot finish either (a 60 s timeout stalled it 60 s, then 500).
    with sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db") as metadata:
        metadata.execute("PRAGMA journal_mode=WAL")
    with create_session() as session:
        for conn_id, value in spec["connections"].items():
            session.execute(delete(Connection).where(Connection.conn_id == conn_id))
            session.add(Connection.from_json(value, conn_id=conn_id))
    _emit(event="result")
    return 0


def _child(spec: dict[str, Any]) -> int:
    if spec["action"] == "setup":
        return _setup_for_serve(spec)
    started = time.monotonic()
    import airflow
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.upgradedb()  # on a new database: tables created from the ORM, then stamped
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = bag.dags.get(spec["dag_id"])
    if dag is None:
        errors = "".join(
            f"\n  {path}: {error.strip().splitlines()[-1]}"
            for path, error in bag.import_errors.items()
        )
        known = ", ".join(sorted(bag.dags)) or "none"
        _emit(
            event="error",
            message=f"no such DAG in {bag.dag_folder} (DAGs found: {known})"
            + (f"; import errors:{errors}" if errors else ""),
        )
        return 2
    for task in dag.tasks:
        task.on_success_callback = [*_as_list(task.on_success_callback), _callback("success")]
        task.on_retry_callback = [*_as_list(task.on_retry_callback), _callback("up_for_retry")]
        task.on_failure_callback = [*_as_list(task.on_failure_callback), _callback("failed")]
        if spec.get("retry_delay") is not None:
            task.retry_delay = timedelta(seconds=spec["retry_delay"])
    _warm_up_execution_api()
    _emit(event="setup", version=airflow.__version__, seconds=time.monotonic() - started)
    try:
        dag_run = dag.test(run_conf=spec["conf"] or None)
    except Exception as exc:  # e.g. a conf that fails the DAG's params
        _emit(event="error", message=f"the DAG run could not start: {_error_text(exc)}")
        return 2
    _emit(event="result", **_run_summary(dag, dag_run))
    return 0


def _warm_up_execution_api() -> None:
    """Build dag.test()'s in-process Execution API now: its first request spends seconds
    generating versioned routes, which would otherwise count as the first task's duration.
    Best effort: an Airflow without this internal only loses the honest timing."""
    try:
        import httpx
        from airflow.sdk.execution_time.supervisor import in_process_api_server

        transport = in_process_api_server().transport
        with httpx.Client(transport=transport, base_url="http://in-process") as client:
            client.get("/execution/health")
    except Exception:
        pass


def _run_summary(dag: Any, dag_run: Any) -> dict:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        by_id = {ti.task_id: ti for ti in rows}
        tasks = []
        for task_id in _task_order(dag):
            ti = by_id.get(task_id)
            reported = _reported.get(task_id, {})
            tasks.append(
                {
                    "task_id": task_id,
                    "state": _state(ti.state) if ti is not None and ti.state else None,
                    "seconds": ti.duration if ti is not None and ti.start_date else None,
                    "try_number": ti.try_number if ti is not None else 0,
                    "error": reported.get("error"),
                    "reported": bool(reported),
                }
            )
    return {"run_id": dag_run.run_id, "state": _state(dag_run.state), "tasks": tasks}


def _state(state: Any) -> str:
    return str(getattr(state, "value", state))


def _task_order(dag: Any) -> Iterator[str]:
    """Task ids upstream first (a chain comes out in its order)."""
    done: set[str] = set()
    pending = list(dag.task_ids)
    while pending:
        ready = [t for t in pending if dag.get_task(t).upstream_task_ids <= done] or pending[:1]
        for task_id in ready:
            done.add(task_id)
            pending.remove(task_id)
            yield task_id


def main(argv: list[str]) -> int:
    global _events
    spec_json, fd = argv
    _events = os.fdopen(int(fd), "w")
    try:
        return _child(json.loads(spec_json))
    except Exception as exc:
        _emit(event="error", message=_error_text(exc) or type(exc).__name__)
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
