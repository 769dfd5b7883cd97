"""Test databases: migrated templates and fresh copies of them, on the server in use.

Every test module gets databases of its own, cloned from a template that was
migrated once per session, so tests never see each other's data. An
unreachable server is an error, never a skip.

On Citus (B2B_CITUS_WORKERS set: `pytest --citus`, make test-citus) a warehouse
is never a clone: a copy of a distributed database would share the template's
shards on the workers. Each is made and migrated anew (b2bdwh migrate
distributes it), then given what the template has for the tests.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psycopg
from psycopg import sql

from b2bdwh import citus, migrate, settings
from b2bdwh.db import with_dbname

ROOT = Path(__file__).resolve().parents[1]
RUN_TAG = f"{os.getpid()}"


def load_env(script: str) -> None:
    """The settings a cluster script prints (`db/<script> env`), into this process."""
    out = subprocess.run(
        ["bash", str(ROOT / "db" / script), "env"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name, value in re.findall(r"(\w+)='([^']*)'", out):
        os.environ[name] = value


def load_cluster_env() -> None:
    """Use the project cluster's settings when the caller did not set any."""
    if os.environ.get("PGHOST") or os.environ.get("B2B_OLTP_DSN"):
        return
    load_env("cluster.sh")


def admin_dsn() -> str:
    return with_dbname(settings.oltp_dsn(), "postgres")


def dsn(dbname: str) -> str:
    return with_dbname(settings.oltp_dsn(), dbname)


def create_database(name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return dsn(name)


def drop_database(name: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    if citus.enabled():
        citus.drop(admin_dsn(), name)


def target(name: str, database_dsn: str, **placeholders: str) -> migrate.Target:
    return migrate.Target(
        name=name,
        dsn=database_dsn,
        migrations_dir=ROOT / "migrations" / name,
        procedures_dir=ROOT / "procedures" / name,
        root=ROOT,
        placeholders=placeholders,
    )


@cache
def oltp_template() -> str:
    """A migrated source database to clone; built once per test session."""
    name = f"b2bdwh_tpl_oltp_{RUN_TAG}"
    template_dsn = create_database(name)
    migrate.migrate(target("oltp", template_dsn), say=lambda _line: None)
    with psycopg.connect(template_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
    atexit.register(drop_database, name)
    return name


def fresh_oltp(label: str) -> tuple[str, str]:
    """A new source database cloned from the template: (name, dsn)."""
    safe = re.sub(r"\W", "_", label)[-30:]
    name = f"b2bdwh_t_{safe}_{RUN_TAG}".lower()
    return name, create_database(name, oltp_template())


def add_test_tools(warehouse_dsn: str) -> None:
    """pgTAP and the tests schema, in a migrated warehouse."""
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
        conn.execute((ROOT / "tests" / "pgtap" / "helpers.sql").read_text())


@cache
def olap_template() -> str:
    """A migrated, empty warehouse to clone, with pgTAP and the tests schema."""
    name = f"b2bdwh_tpl_olap_{RUN_TAG}"
    template_dsn = create_database(name)
    placeholders = migrate.source_placeholders(dsn(oltp_template()))
    migrate.migrate(target("olap", template_dsn, **placeholders), say=lambda _line: None)
    add_test_tools(template_dsn)
    atexit.register(drop_database, name)
    return name


def create_warehouse(name: str, oltp_dsn: str) -> str:
    """A new, empty warehouse database whose foreign server reads the source at oltp_dsn,
    migrated, with pgTAP and the tests schema: cloned from the template on one server,
    made anew on Citus. Returns its DSN."""
    placeholders = migrate.source_placeholders(oltp_dsn)
    if citus.enabled():
        warehouse_dsn = create_database(name)
        migrate.migrate(target("olap", warehouse_dsn, **placeholders), say=lambda _line: None)
        add_test_tools(warehouse_dsn)
        return warehouse_dsn
    warehouse_dsn = create_database(name, olap_template())
    migrate.migrate(target("olap", warehouse_dsn, **placeholders), say=lambda _line: None)
    return warehouse_dsn


@dataclass
class Warehouse:
    """A source and a warehouse reading it, both fresh: names and DSNs."""

    oltp_name: str
    oltp_dsn: str
    olap_name: str
    olap_dsn: str

    def drop(self) -> None:
        drop_database(self.olap_name)
        drop_database(self.oltp_name)


def fresh_warehouse(label: str) -> Warehouse:
    """A new source (empty, migrated) and a new warehouse whose foreign server
    points at it, cloned from the templates."""
    oltp_name, oltp_dsn = fresh_oltp(label)
    olap_name = oltp_name.replace("b2bdwh_t_", "b2bdwh_w_", 1)
    return Warehouse(oltp_name, oltp_dsn, olap_name, create_warehouse(olap_name, oltp_dsn))


def query(dsn: str, sql_text: str, params: tuple | dict = ()) -> list[tuple]:
    """All rows of one query, in a connection of its own."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql_text, params).fetchall()


def execute(dsn: str, statement: str, params: tuple | dict | None = None) -> None:
    """One statement on an autocommit connection of its own: how psql users CALL
    procedures that commit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def scalar(dsn: str, sql_text: str, params: tuple | dict = ()) -> object:
    """The first column of the first row of one query."""
    return query(dsn, sql_text, params)[0][0]


def report(request, line: str) -> None:
    """Print a line on the terminal even while pytest captures output (how many cases a
    property test tried)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(line)


def source_fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    """Rows and md5 of every column of every row, per source table, in key order."""
    from b2bdwh import source

    return {
        table: query(
            dsn,
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {columns[0]}), ''))"
            f" FROM public.{table} t",
        )[0]
        for table, columns in source.SOURCE_TABLES.items()
    }
