"""The migration runner: Flyway's semantics on a scratch database and scratch files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import dbtools
from b2bdwh import migrate
from b2bdwh.db import CliError


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[migrate.Target]:
    """An empty database and empty migration folders for one test."""
    name = f"b2bdwh_t_migrate_{dbtools.RUN_TAG}"
    dsn = dbtools.create_database(name)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "procedures").mkdir()
    yield migrate.Target(
        name="scratch",
        dsn=dsn,
        root=tmp_path,
        migrations_dir=tmp_path / "migrations",
        procedures_dir=tmp_path / "procedures",
    )
    dbtools.drop_database(name)


def write(target: migrate.Target, relpath: str, text: str) -> Path:
    path = target.root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def query(target: migrate.Target, sql: str) -> list[tuple]:
    with psycopg.connect(target.dsn) as conn:
        return conn.execute(sql).fetchall()


def run(target: migrate.Target, **kwargs) -> list[str]:
    lines: list[str] = []
    migrate.migrate(target, say=lines.append, **kwargs)
    return lines


def test_versioned_files_apply_once_in_version_order(scratch):
    write(scratch, "migrations/V2__add_row.sql", "INSERT INTO t VALUES (2);")
    write(scratch, "migrations/V10__add_another.sql", "INSERT INTO t VALUES (10);")
    write(scratch, "migrations/V1__create.sql", "CREATE TABLE t (n int);")
    run(scratch)
    run(scratch)  # a second run has nothing to do
    assert query(scratch, "SELECT n FROM t ORDER BY n") == [(2,), (10,)]
    history = query(
        scratch,
        "SELECT version, script, kind, length(checksum), applied_by = current_user,"
        " duration_ms >= 0 FROM schema_history ORDER BY installed_rank",
    )
    assert history == [
        (1, "migrations/V1__create.sql", "versioned", 64, True, True),
        (2, "migrations/V2__add_row.sql", "versioned", 64, True, True),
        (10, "migrations/V10__add_another.sql", "versioned", 64, True, True),
    ]


def test_an_edited_applied_migration_is_refused_and_nothing_runs(scratch):
    path = write(scratch, "migrations/V1__create.sql", "CREATE TABLE t (n int);")
    run(scratch)
    path.write_text("CREATE TABLE t (n bigint);")
    write(scratch, "migrations/V2__more.sql", "CREATE TABLE u (n int);")
    with pytest.raises(CliError, match=r"V1__create\.sql was edited after it was applied"):
        run(scratch)
    assert query(scratch, "SELECT to_regclass('u') IS NULL") == [(True,)]
    assert not migrate.status(scratch, say=lambda _line: None)


def test_a_deleted_applied_migration_is_refused(scratch):
    path = write(scratch, "migrations/V1__create.sql", "CREATE TABLE t (n int);")
    run(scratch)
    path.unlink()
    with pytest.raises(CliError, match="its file is gone"):
        run(scratch)


def test_a_new_migration_below_the_highest_applied_is_refused(scratch):
    write(scratch, "migrations/V5__create.sql", "CREATE TABLE t (n int);")
    run(scratch)
    write(scratch, "migrations/V3__late.sql", "CREATE TABLE u (n int);")
    with pytest.raises(CliError, match="lower than the highest applied"):
        run(scratch)


def test_a_badly_named_or_duplicate_version_is_refused(scratch):
    write(scratch, "migrations/create_table.sql", "SELECT 1;")
    with pytest.raises(CliError, match="not a versioned migration name"):
        run(scratch)
    (scratch.migrations_dir / "create_table.sql").unlink()
    write(scratch, "migrations/V1__a.sql", "SELECT 1;")
    write(scratch, "migrations/V01__b.sql", "SELECT 1;")
    with pytest.raises(CliError, match="version 1 is also used"):
        run(scratch)


def test_a_failing_migration_rolls_back_alone_and_names_its_line(scratch):
    write(scratch, "migrations/V1__create.sql", "CREATE TABLE t (n int);")
    write(
        scratch, "migrations/V2__broken.sql", "INSERT INTO t VALUES (1);\n\nSELECT nonsense FROM t;"
    )
    with pytest.raises(
        CliError, match=r"V2__broken\.sql line 3: column \"nonsense\" does not exist"
    ):
        run(scratch)
    assert query(scratch, "SELECT count(*) FROM t") == [(0,)]
    assert query(scratch, "SELECT version FROM schema_history") == [(1,)]


def test_repeatables_run_after_versioned_and_again_only_when_changed(scratch):
    write(scratch, "migrations/V1__create.sql", "CREATE SCHEMA app;")
    proc = write(
        scratch,
        "procedures/app/app.answer.sql",
        "CREATE OR REPLACE FUNCTION app.answer() RETURNS int LANGUAGE sql AS 'SELECT 41';",
    )
    where = migrate.describe(scratch.dsn)
    assert run(scratch)[-1] == f"scratch: 2 applied now, 0 pending, 0 changed ({where})"
    assert run(scratch) == [f"scratch: 0 applied now, 0 pending, 0 changed ({where})"]
    proc.write_text(proc.read_text().replace("41", "42"))
    lines = run(scratch)
    assert any("procedures/app/app.answer.sql" in line for line in lines)
    assert query(scratch, "SELECT app.answer()") == [(42,)]
    assert query(scratch, "SELECT count(*) FROM schema_history WHERE kind = 'repeatable'") == [(2,)]


def test_placeholders_are_replaced_and_a_changed_value_redeploys(scratch):
    write(
        scratch,
        "procedures/where.sql",
        "CREATE OR REPLACE VIEW public.source_host AS SELECT ${oltp_host}::text AS host;",
    )
    scratch.placeholders = {"oltp_host": "alpha"}
    run(scratch)
    scratch.placeholders = {"oltp_host": "beta"}
    run(scratch)
    assert query(scratch, "SELECT host FROM source_host") == [("beta",)]
    scratch.placeholders = {}
    with pytest.raises(CliError, match=r"unknown placeholder \$\{oltp_host\}"):
        run(scratch)


# Values that ended the literal they were pasted into when placeholders went in unquoted:
# a quote, a backslash (in an E'' string or with standard_conforming_strings off), a
# dollar quote (a DO block's body), a line break after a comment, and SQL after each.
HOSTILE_VALUES = [
    "pa'ss",
    "back\\slash\\",
    "$$dollar$$ $config$",
    "x'; CREATE ROLE b2bdwh_pwned; --",
    "\\'; CREATE ROLE b2bdwh_pwned; --",
    "$config$; CREATE ROLE b2bdwh_pwned; DO $config$ BEGIN END $config$; --",
    "-- \n'; CREATE ROLE b2bdwh_pwned; --",
    "pässwörd with spaces\tand a tab",
    "",
]


def no_injected_role(target: migrate.Target) -> bool:
    return query(target, "SELECT to_regrole('b2bdwh_pwned') IS NULL") == [(True,)]


def test_a_placeholder_is_a_complete_literal_whatever_its_value(scratch):
    write(
        scratch,
        "procedures/value.sql",
        "CREATE OR REPLACE VIEW public.setting AS SELECT ${value}::text AS value;\n"
        "-- a comment may mention ${value} or ${anything}: it is left as written\n"
        "COMMENT ON VIEW public.setting IS ${value};",
    )
    for value in HOSTILE_VALUES:
        scratch.placeholders = {"value": value}
        run(scratch)
        assert query(scratch, "SELECT value FROM public.setting") == [(value,)]
        assert query(
            scratch, "SELECT coalesce(obj_description('public.setting'::regclass), '')"
        ) == [(value,)]
        assert no_injected_role(scratch)
    # With standard_conforming_strings off a backslash is an escape in '' strings too;
    # the literal reads the same either way.
    with psycopg.connect(scratch.dsn, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} SET standard_conforming_strings = off").format(
                psycopg.sql.Identifier(conn.info.dbname)
            )
        )
    scratch.placeholders = {"value": "\\'; CREATE ROLE b2bdwh_pwned; --"}
    run(scratch)
    assert query(scratch, "SELECT value FROM public.setting") == [(scratch.placeholders["value"],)]
    assert no_injected_role(scratch)


@pytest.mark.parametrize(
    "text, where",
    [
        ("SELECT '${value}';", "a quoted string"),
        ("SELECT E'\\' ${value}';", "a quoted string"),
        ('SELECT 1 AS "${value}";', "a quoted identifier"),
        ("DO $$ BEGIN PERFORM ${value}; END $$;", "the dollar-quoted body $$"),
        ("DO $body$ BEGIN PERFORM ${value}; END $body$;", "the dollar-quoted body $body$"),
    ],
)
def test_a_placeholder_inside_quoted_text_is_refused(scratch, text, where):
    write(scratch, "procedures/quoted.sql", text)
    scratch.placeholders = {"value": "x"}
    with pytest.raises(
        CliError, match=rf"procedures/quoted\.sql line 1: placeholder .* {re.escape(where)}"
    ):
        run(scratch)


def mapping_options(dsn: str) -> dict[str, str]:
    """The foreign server's options and its user mapping's, read as a superuser."""
    rows = dbtools.query(
        dsn,
        """SELECT 'server.' || split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)
             FROM pg_foreign_server s, unnest(s.srvoptions) o
            WHERE s.srvname = 'b2b_sales_source'
           UNION ALL
           SELECT 'mapping.' || split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)
             FROM pg_user_mappings m, unnest(m.umoptions) o
            WHERE m.srvname = 'b2b_sales_source' AND m.usename = 'public'""",
    )
    return dict(rows)


def test_any_source_setting_reaches_the_foreign_server_exactly():
    """`B2B_OLTP_PASSWORD="pa'ss" b2bdwh migrate --target olap` and its harder cousins."""
    odd_name = f'b2bdwh_t odd\'db "q" $$ \\ {dbtools.RUN_TAG}'
    oltp_dsn = dbtools.create_database(odd_name, dbtools.oltp_template())
    olap = f"b2bdwh_t_mapping_{dbtools.RUN_TAG}"
    dbtools.drop_database(olap)
    olap_dsn = dbtools.dsn(olap)
    server_file = "procedures/olap/00_source/b2b_sales_source.server.sql"
    try:
        env = {
            **os.environ,
            "B2B_OLTP_DSN": oltp_dsn,
            "B2B_OLAP_DSN": olap_dsn,
            "B2B_OLTP_PASSWORD": "x'; CREATE ROLE b2bdwh_pwned; --",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "b2bdwh", "migrate", "--target", "olap"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        options = mapping_options(olap_dsn)
        assert options["mapping.password"] == env["B2B_OLTP_PASSWORD"]
        assert options["mapping.user"] == "b2b_cdc_reader"
        assert options["server.dbname"] == odd_name
        assert dbtools.query(olap_dsn, "SELECT to_regrole('b2bdwh_pwned') IS NULL") == [(True,)]
        # The foreign server reaches the oddly named source.
        assert dbtools.query(olap_dsn, "SELECT count(*) FROM src.accounts") == [(0,)]

        placeholders = migrate.source_placeholders(oltp_dsn)
        target = dbtools.target("olap", olap_dsn, **placeholders)
        for password in HOSTILE_VALUES:
            target.placeholders = {**placeholders, "oltp_password": password}
            lines: list[str] = []
            migrate.migrate(target, say=lines.append)
            # A new password redeploys the server file alone: no applied versioned
            # migration looks edited, no other repeatable changes.
            assert [line.split()[1] for line in lines if line.startswith("  applied")] == [
                server_file
            ]
            options = mapping_options(olap_dsn)
            assert options.get("mapping.password", "") == password
            assert dbtools.query(olap_dsn, "SELECT to_regrole('b2bdwh_pwned') IS NULL") == [(True,)]
        assert migrate.status(target, say=lambda _line: None)

        odd_user = 'odd\'reader "$$" \\'
        target.placeholders = {**placeholders, "oltp_user": odd_user, "oltp_host": "h'ost"}
        migrate.migrate(target, say=lambda _line: None)
        options = mapping_options(olap_dsn)
        assert (options["mapping.user"], options["server.host"]) == (odd_user, "h'ost")
    finally:
        dbtools.drop_database(olap)
        dbtools.drop_database(odd_name)


def test_function_bodies_may_refer_to_routines_deployed_later(scratch):
    write(
        scratch,
        "procedures/a_caller.sql",
        "CREATE OR REPLACE FUNCTION public.caller() RETURNS int LANGUAGE sql AS"
        " 'SELECT public.callee()';",
    )
    write(
        scratch,
        "procedures/b_callee.sql",
        "CREATE OR REPLACE FUNCTION public.callee() RETURNS int LANGUAGE sql AS 'SELECT 7';",
    )
    run(scratch)
    assert query(scratch, "SELECT public.caller()") == [(7,)]


def test_dry_run_and_status_change_nothing(scratch):
    write(scratch, "migrations/V1__create.sql", "CREATE TABLE t (n int);")
    lines = run(scratch, dry_run=True)
    assert "  would apply migrations/V1__create.sql" in lines
    assert query(scratch, "SELECT to_regclass('t') IS NULL, to_regclass('schema_history')") == [
        (True, None)
    ]
    out: list[str] = []
    assert migrate.status(scratch, say=out.append)
    assert "  pending  migrations/V1__create.sql" in out


def test_a_second_runner_waits_for_the_lock_then_gives_up(scratch):
    write(scratch, "migrations/V1__create.sql", "CREATE TABLE t (n int);")
    with psycopg.connect(scratch.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        started = time.monotonic()
        with pytest.raises(CliError, match="another migration runner is working"):
            run(scratch, lock_timeout=0.5)
        assert time.monotonic() - started >= 0.5
    assert query(scratch, "SELECT to_regclass('t') IS NULL") == [(True,)]


def test_a_waiting_runner_proceeds_once_the_lock_is_released(scratch):
    write(scratch, "migrations/V1__create.sql", "CREATE TABLE t (n int);")
    holder = psycopg.connect(scratch.dsn, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
    threading.Timer(0.5, holder.close).start()
    lines = run(scratch, lock_timeout=30)
    assert any("waiting up to 30s for another migration runner" in line for line in lines)
    assert query(scratch, "SELECT count(*) FROM t") == [(0,)]


def test_the_command_line_creates_databases_and_reports(tmp_path):
    """Each target ends with one summary line (applied, pending, changed); files are listed
    only with --verbose."""
    oltp = f"b2bdwh_t_cli_oltp_{dbtools.RUN_TAG}"
    olap = f"b2bdwh_t_cli_olap_{dbtools.RUN_TAG}"
    env = {**os.environ, "B2B_OLTP_DSN": f"dbname={oltp}", "B2B_OLAP_DSN": f"dbname={olap}"}

    def b2bdwh_migrate(*args: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "b2bdwh", "migrate", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    def counts(line: str) -> tuple[str, ...]:
        match = re.fullmatch(
            r"(\w+): (\d+) applied( now)?, (\d+) pending, (\d+) changed \(.*\)", line
        )
        assert match, line
        return match.group(1, 2, 4, 5)

    files = {
        target: len(list((dbtools.ROOT / "migrations" / target).glob("V*.sql")))
        + len(list((dbtools.ROOT / "procedures" / target).rglob("*.sql")))
        for target in ("oltp", "olap")
    }
    try:
        dry = b2bdwh_migrate("--dry-run", "--target", "oltp")
        assert dry[0].endswith("does not exist; it would be created")
        assert [counts(line) for line in dry[1:]] == [("oltp", "0", str(files["oltp"]), "0")]
        applied = b2bdwh_migrate()
        assert [counts(line) for line in applied] == [
            ("oltp", str(files["oltp"]), "0", "0"),
            ("olap", str(files["olap"]), "0", "0"),
        ]
        status = b2bdwh_migrate("status")
        assert [counts(line) for line in status] == [
            ("oltp", str(files["oltp"]), "0", "0"),
            ("olap", str(files["olap"]), "0", "0"),
        ]
        verbose = b2bdwh_migrate("status", "--verbose", "--target", "oltp")
        assert any(
            line.startswith("  applied  migrations/oltp/V0001__source_tables.sql")
            for line in verbose
        )
        assert counts(verbose[-1]) == ("oltp", str(files["oltp"]), "0", "0")
        assert len(verbose) == files["oltp"] + 1
        # A changed applied migration: counted in the summary, named in an error line.
        with psycopg.connect(dbtools.dsn(oltp), autocommit=True) as conn:
            conn.execute(
                "UPDATE schema_history SET checksum = 'x' WHERE script LIKE %s",
                ("%V0001__source_tables.sql",),
            )
        proc = subprocess.run(
            [sys.executable, "-m", "b2bdwh", "migrate", "status", "--target", "oltp"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("  error: migrations/oltp/V0001__source_tables.sql was edited")
        assert counts(lines[-1]) == ("oltp", str(files["oltp"] - 1), "0", "1")
    finally:
        dbtools.drop_database(oltp)
        dbtools.drop_database(olap)


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    env = {**os.environ, "B2B_OLTP_DSN": f"host={tmp_path} port=1 dbname=nowhere"}
    proc = subprocess.run(
        [sys.executable, "-m", "b2bdwh", "migrate", "--target", "oltp"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot connect to database nowhere" in proc.stderr
    assert "Traceback" not in proc.stderr
