"""A compact migration runner with Flyway's semantics, for the `oltp` and `olap` targets.

- Versioned files `migrations/<target>/V<n>__<name>.sql` run once, in version
  order, each in its own transaction, and are recorded with their checksum.
  An applied file that was edited since is refused: nothing runs until the
  file is restored (changes go into a new versioned file).
- Repeatable files under `procedures/<target>/` (CREATE OR REPLACE ...) run
  after the versioned ones, in path order, whenever their checksum differs
  from the last one applied. Function bodies are not checked at creation
  (check_function_bodies = off, as pg_dump does), so their order does not
  matter.
- A placeholder `${name}` in SQL code stands for a complete string literal: it
  is replaced with the setting's value quoted as quote_literal() would, so no
  value (a password with quotes, backslashes, `$$` or SQL in it) can end the
  literal. A placeholder inside a quoted string, quoted identifier or
  dollar-quoted body is refused; one in a comment is left alone. A
  repeatable's checksum is taken after replacement, so a changed setting
  redeploys it; a versioned file's is taken of the file as written, so a
  changed setting never makes an applied migration look edited.
- The callback `migrations/<target>/afterMigrate.sql` (Flyway's name) runs at
  the end of every migrate, in its own transaction, and is not recorded: it
  re-establishes what must hold after any deployment (ownership, grants), so
  an object created by any file gets them.
- A session advisory lock keeps two runners apart.
- public.schema_history records script, checksum, applied_at, applied_by and
  duration of every file applied.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from b2bdwh import citus, settings
from b2bdwh.db import CliError, connect, describe, parse, with_dbname

HELP = "apply migrations and procedures to the source (oltp) and the warehouse (olap)"

TARGETS = ("oltp", "olap")
HISTORY_TABLE = "public.schema_history"
# pg_advisory_lock key: the first 8 bytes of sha256('b2bdwh.migrate').
LOCK_KEY = int.from_bytes(hashlib.sha256(b"b2bdwh.migrate").digest()[:8], "big", signed=True)
VERSIONED_NAME = re.compile(r"^V(\d+)__(\w+)\.sql$")
CALLBACK_NAME = "afterMigrate.sql"
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")

HISTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    installed_rank integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version integer,
    script text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('versioned', 'repeatable')),
    checksum text NOT NULL,
    applied_by text NOT NULL DEFAULT current_user,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
);
COMMENT ON TABLE {HISTORY_TABLE} IS
    'Migrations and procedure files applied by b2bdwh migrate, one row per application.';
CREATE UNIQUE INDEX IF NOT EXISTS schema_history_version_key
    ON {HISTORY_TABLE} (version) WHERE kind = 'versioned';
"""


@dataclass(frozen=True)
class Script:
    """One file to apply: a versioned migration or a repeatable procedure file."""

    path: Path
    name: str  # relative to the project root, as recorded in the history
    kind: str  # 'versioned' or 'repeatable'
    version: int | None
    text: str  # after placeholder replacement
    checksum: str  # of the raw file (versioned) or the replaced text (repeatable)


@dataclass
class Target:
    """A database to migrate and the files that build it."""

    name: str
    dsn: str
    migrations_dir: Path
    procedures_dir: Path
    root: Path = settings.PROJECT_ROOT
    placeholders: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """What a run would do, and what it found wrong."""

    pending: list[Script]
    applied: list[tuple[Script | None, dict]]  # (file, history row) of applied versioned files
    current_repeatables: list[Script]
    errors: list[str]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def quote_literal(value: str) -> str:
    """`value` as a complete SQL string literal, as PostgreSQL's quote_literal() writes it:
    quotes doubled, and with backslashes doubled in an E'' string, so it reads the same
    whatever standard_conforming_strings says. Nothing in a value can end the literal."""
    if "\0" in value:
        raise CliError("a placeholder value contains a NUL character, which SQL text cannot hold")
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


# What render() steps over without replacing: comments, quoted strings and identifiers,
# dollar-quoted bodies. Identifiers and keywords are matched whole, so `a$b$` is no tag.
_LINE_COMMENT = re.compile(r"--[^\n]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$")
_WORD = re.compile(r"[\w\x80-\uffff](?:[\w\x80-\uffff]|\$(?!\{))*")


def _quoted_end(text: str, start: int, quote: str, backslashes: bool) -> int:
    """The index just past the quoted string or identifier opening at `start`."""
    i = start + 1
    while i < len(text):
        if backslashes and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            if text.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return len(text)


def _block_comment_end(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(text)


def render(text: str, placeholders: dict[str, str], where: str) -> str:
    """Replace each `${name}` in SQL code with the value as a complete quoted literal.

    A placeholder stands for a whole literal, so a value cannot end it early, whatever
    it holds (quotes, backslashes, `$$`, SQL). One written inside a quoted string, a
    quoted identifier or a dollar-quoted body would be pasted into that text unquoted,
    so it is refused; one in a comment is left as it is."""
    out: list[str] = []
    i = 0

    def refuse(region_start: int, region_end: int, what: str) -> None:
        found = PLACEHOLDER.search(text, region_start, region_end)
        if found:
            line = text.count("\n", 0, found.start()) + 1
            raise CliError(
                f"{where} line {line}: placeholder {found.group(0)} inside {what}; write it "
                "bare (it stands for a complete quoted literal), e.g. "
                "SELECT set_config('app.x', ${x}, true) before a DO block"
            )

    while i < len(text):
        ch = text[i]
        end = i + 1
        if text.startswith("--", i):
            end = _LINE_COMMENT.match(text, i).end()  # type: ignore[union-attr]
        elif text.startswith("/*", i):
            end = _block_comment_end(text, i)
        elif ch == "'":
            prefix = text[i - 1 : i].lower() if i else ""
            escaped = prefix == "e" and not (i >= 2 and _WORD.match(text[i - 2]))
            end = _quoted_end(text, i, "'", escaped)
            refuse(i, end, "a quoted string")
        elif ch == '"':
            end = _quoted_end(text, i, '"', False)
            refuse(i, end, "a quoted identifier")
        elif ch == "$":
            match = PLACEHOLDER.match(text, i)
            tag = _DOLLAR_TAG.match(text, i)
            if match:
                key = match.group(1)
                if key not in placeholders:
                    known = ", ".join(sorted(placeholders)) or "none"
                    raise CliError(f"{where}: unknown placeholder ${{{key}}} (known: {known})")
                out.append(quote_literal(placeholders[key]))
                i = match.end()
                continue
            if tag:
                close = text.find(tag.group(0), tag.end())
                end = len(text) if close < 0 else close + len(tag.group(0))
                refuse(i, end, f"the dollar-quoted body {tag.group(0)}")
        else:
            word = _WORD.match(text, i)
            if word:
                end = word.end()
        out.append(text[i:end])
        i = end
    return "".join(out)


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def read_scripts(target: Target) -> tuple[list[Script], list[Script]]:
    """The versioned files in version order and the repeatable files in path order."""
    versioned: list[Script] = []
    seen: dict[int, str] = {}
    if target.migrations_dir.is_dir():
        for path in sorted(target.migrations_dir.glob("*.sql")):
            if path.name == CALLBACK_NAME:
                continue
            name = relative(path, target.root)
            match = VERSIONED_NAME.match(path.name)
            if not match:
                raise CliError(
                    f"{name}: not a versioned migration name; expected V<number>__<name>.sql"
                )
            version = int(match.group(1))
            if version in seen:
                raise CliError(f"{name}: version {version} is also used by {seen[version]}")
            seen[version] = name
            raw = path.read_text()
            text = render(raw, target.placeholders, name)
            versioned.append(Script(path, name, "versioned", version, text, sha256(raw)))
    versioned.sort(key=lambda s: s.version or 0)

    repeatable: list[Script] = []
    if target.procedures_dir.is_dir():
        for path in sorted(target.procedures_dir.rglob("*.sql")):
            name = relative(path, target.root)
            text = render(path.read_text(), target.placeholders, name)
            repeatable.append(Script(path, name, "repeatable", None, text, sha256(text)))
    return versioned, repeatable


def ensure_database(target: Target, *, create: bool) -> bool:
    """True when the target database exists; creates it when asked to."""
    dbname = parse(target.dsn).get("dbname")
    try:
        connect(target.dsn).close()
        return True
    except CliError as exc:
        if not dbname or "does not exist" not in str(exc):
            raise
    if not create:
        return False
    with connect(with_dbname(target.dsn, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))
    return True


def history(conn: psycopg.Connection) -> list[dict]:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (HISTORY_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return []
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(f"SELECT * FROM {HISTORY_TABLE} ORDER BY installed_rank").fetchall()


def make_plan(target: Target, rows: list[dict]) -> Plan:
    versioned, repeatable = read_scripts(target)
    by_version = {s.version: s for s in versioned}
    applied_rows = [r for r in rows if r["kind"] == "versioned"]
    applied_versions = {r["version"] for r in applied_rows}
    errors: list[str] = []
    applied: list[tuple[Script | None, dict]] = []
    for row in applied_rows:
        script = by_version.get(row["version"])
        applied.append((script, row))
        if script is None:
            errors.append(
                f"{row['script']} was applied on {row['applied_at']:%Y-%m-%d %H:%M} "
                "but its file is gone; restore it (migrations are forward-only)"
            )
        elif script.checksum != row["checksum"]:
            errors.append(
                f"{script.name} was edited after it was applied on "
                f"{row['applied_at']:%Y-%m-%d %H:%M} by {row['applied_by']} "
                f"(checksum {row['checksum'][:12]} then, {script.checksum[:12]} now). "
                "Applied migrations must not change: restore the file and put the "
                "change in a new versioned migration"
            )
    highest = max(applied_versions, default=0)
    pending = [s for s in versioned if s.version not in applied_versions]
    for script in pending:
        if (script.version or 0) < highest:
            errors.append(
                f"{script.name} has version {script.version}, lower than the highest applied "
                f"({highest}); give it a higher version number"
            )
    last_checksum: dict[str, str] = {}
    for row in rows:
        if row["kind"] == "repeatable":
            last_checksum[row["script"]] = row["checksum"]
    current = [s for s in repeatable if last_checksum.get(s.name) == s.checksum]
    pending += [s for s in repeatable if last_checksum.get(s.name) != s.checksum]
    return Plan(pending, applied, current, errors)


def acquire_lock(conn: psycopg.Connection, timeout: float, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if got and got[0]:
            return
        holder = conn.execute(
            """SELECT a.pid, a.usename, a.backend_start
                 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                WHERE l.locktype = 'advisory' AND l.granted
                  AND l.classid = (%s::bigint >> 32)::oid
                  AND l.objid = (%s::bigint & 4294967295)::oid""",
            (LOCK_KEY, LOCK_KEY),
        ).fetchone()
        who = f"backend pid {holder[0]}, user {holder[1]}" if holder else "another session"
        if time.monotonic() >= deadline:
            raise CliError(
                f"another migration runner is working on this database ({who}); "
                "nothing was applied. Try again when it has finished."
            )
        if not warned:
            say(f"  waiting up to {timeout:g}s for another migration runner ({who})")
            warned = True
        time.sleep(0.2)


def error_line(exc: psycopg.Error, text: str) -> str:
    position = exc.diag.statement_position
    if position and position.isdigit():
        return f" line {text[: int(position)].count(chr(10)) + 1}"
    return ""


def apply_script(conn: psycopg.Connection, script: Script) -> int:
    """Run one file in one transaction, recording it unless it is the callback. Returns the
    duration in ms."""
    started = time.monotonic()
    try:
        with conn.transaction():
            conn.execute("SET LOCAL check_function_bodies = off")
            conn.execute(script.text)
            duration = int((time.monotonic() - started) * 1000)
            if script.kind != "callback":
                conn.execute(
                    f"""INSERT INTO {HISTORY_TABLE} (version, script, kind, checksum, duration_ms)
                        VALUES (%s, %s, %s, %s, %s)""",
                    (script.version, script.name, script.kind, script.checksum, duration),
                )
    except psycopg.Error as exc:
        state = exc.sqlstate or "?"
        message = (exc.diag.message_primary or str(exc)).strip()
        what = "the callback" if script.kind == "callback" else "this file"
        raise CliError(
            f"{script.name}{error_line(exc, script.text)}: {message} (SQLSTATE {state}); "
            f"{what} was rolled back, the files before it stay applied"
        ) from exc
    return duration


def after_migrate(target: Target) -> Script | None:
    """The target's afterMigrate callback, if it has one."""
    path = target.migrations_dir / CALLBACK_NAME
    if not path.is_file():
        return None
    name = relative(path, target.root)
    text = render(path.read_text(), target.placeholders, name)
    return Script(path, name, "callback", None, text, sha256(text))


def summary(target: Target, applied: int, pending: int, changed: int, *, now: bool = False) -> str:
    """The one line that ends a migrate or a status: counts per target."""
    word = "applied now" if now else "applied"
    return (
        f"{target.name}: {applied} {word}, {pending} pending, {changed} changed"
        f" ({describe(target.dsn)})"
    )


def migrate(
    target: Target,
    *,
    dry_run: bool = False,
    lock_timeout: float = 30.0,
    say: Callable[[str], None] = print,
    verbose: bool = True,
) -> list[Script]:
    """Bring one target up to date. Returns the scripts applied (or that would be). Ends with
    a summary line; each file is named only when verbose."""

    def detail(line: str) -> None:
        if verbose:
            say(line)

    where = describe(target.dsn)
    if not ensure_database(target, create=not dry_run):
        versioned, repeatable = read_scripts(target)
        say(f"{target.name}: {where} does not exist; it would be created")
        for script in versioned + repeatable:
            detail(f"  would apply {script.name}")
        say(summary(target, 0, len(versioned + repeatable), 0, now=True))
        return versioned + repeatable
    if target.name == "olap" and citus.enabled() and not dry_run:
        # Before the first migration: they distribute the tables when Citus is there.
        citus.prepare(target.dsn)
    with connect(target.dsn, autocommit=True) as conn:
        if not dry_run:
            acquire_lock(conn, lock_timeout, say)
            conn.execute(HISTORY_DDL)
        plan = make_plan(target, history(conn))
        if plan.errors:
            raise CliError(
                f"{target.name} ({where}): nothing applied.\n  " + "\n  ".join(plan.errors)
            )
        for script in plan.pending:
            if dry_run:
                detail(f"  would apply {script.name}")
                continue
            duration = apply_script(conn, script)
            detail(f"  applied {script.name} ({duration} ms)")
        callback = after_migrate(target)
        if callback and not dry_run:
            duration = apply_script(conn, callback)
            if plan.pending:
                detail(f"  ran {callback.name} ({duration} ms)")
        if dry_run:
            say(summary(target, 0, len(plan.pending), 0, now=True))
            return plan.pending
        say(summary(target, len(plan.pending), 0, 0, now=True))
        return plan.pending


def status(target: Target, say: Callable[[str], None] = print, verbose: bool = True) -> bool:
    """Print a summary line of applied, pending and changed files (each one listed when
    verbose) and any error. Returns False when something is wrong."""
    if not ensure_database(target, create=False):
        versioned, repeatable = read_scripts(target)
        say(f"{target.name}: {describe(target.dsn)} does not exist yet")
        say(summary(target, 0, len(versioned + repeatable), 0))
        return True
    with connect(target.dsn, autocommit=True) as conn:
        plan = make_plan(target, history(conn))
    changed = 0
    lines = []
    for script, row in plan.applied:
        state = "applied " if script and script.checksum == row["checksum"] else "CHANGED "
        if script is None:
            state = "MISSING "
        changed += state != "applied "
        lines.append(
            f"  {state} {row['script']:<60} {row['applied_at']:%Y-%m-%d %H:%M} {row['applied_by']}"
        )
    lines += [f"  current  {script.name}" for script in plan.current_repeatables]
    lines += [f"  pending  {script.name}" for script in plan.pending]
    if verbose:
        for line in lines:
            say(line)
    for error in plan.errors:
        say(f"  error: {error}")
    applied = len(plan.applied) - changed + len(plan.current_repeatables)
    say(summary(target, applied, len(plan.pending), changed))
    return not plan.errors


def source_placeholders(oltp_dsn: str) -> dict[str, str]:
    """Where the warehouse finds the source: resolved by connecting to it, so that
    PGHOST/PGPORT defaults end up in the foreign server as real values. When the
    source does not exist yet (a dry run), the settings are read without connecting."""
    try:
        with connect(oltp_dsn) as conn:
            info = conn.info
            host, port, dbname = info.host, str(info.port), info.dbname
    except CliError:
        params = parse(oltp_dsn)
        host = str(params.get("host") or os.environ.get("PGHOST", "/var/run/postgresql"))
        port = str(params.get("port") or os.environ.get("PGPORT", "5432"))
        dbname = str(params.get("dbname") or settings.OLTP_DB)
    return {
        "oltp_host": host,
        "oltp_port": port,
        "oltp_dbname": dbname,
        # The foreign server logs in as the capture reader, never as the deployer.
        "oltp_user": os.environ.get("B2B_OLTP_CAPTURE_USER", "b2b_cdc_reader"),
        # Never in the repository: taken from the environment when needed.
        "oltp_password": os.environ.get("B2B_OLTP_PASSWORD", ""),
    }


def default_target(name: str) -> Target:
    """A target as the settings describe it; the warehouse's placeholders point at
    the source (call it after the source is migrated, so they resolve)."""
    root = settings.PROJECT_ROOT
    return Target(
        name=name,
        dsn=settings.dsn_for(name),
        migrations_dir=root / "migrations" / name,
        procedures_dir=root / "procedures" / name,
        root=root,
        placeholders=source_placeholders(settings.oltp_dsn()) if name == "olap" else {},
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["apply", "status"],
        default="apply",
        help="apply pending files (default) or list applied and pending ones",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        action="append",
        help="only this target (repeatable); default: oltp, then olap",
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would run; run nothing")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list each file (applied, pending, changed); by default one summary line per target",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for another runner (default 30)",
    )


def run(args: argparse.Namespace) -> int:
    names = args.target or TARGETS
    if args.action == "status":
        ok = all([status(default_target(name), verbose=args.verbose) for name in names])
        return 0 if ok else 1
    for name in names:
        migrate(
            default_target(name),
            dry_run=args.dry_run,
            lock_timeout=args.lock_timeout,
            verbose=args.verbose,
        )
    return 0
