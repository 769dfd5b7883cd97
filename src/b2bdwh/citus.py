"""The warehouse on Citus: making a warehouse database a distributed one.

Citus keeps its node list per database, so every warehouse database (the one
`make citus` deploys, and each a test creates) needs the extension on the
coordinator and on every worker, and its workers registered, before the
migrations run. The migrations then see the extension and distribute the tables
(V0027); the routines are the same ones a single server runs.

B2B_CITUS_WORKERS ("host:port,host:port", set by `db/citus.sh env`) names the
workers. Without it nothing here runs and a warehouse is a single-server one.
The coordinator is not registered as a node: it would then hold a copy of every
reference table, and a write to it executed locally leaves the step's
transaction unable to open the connections its later statements need.
"""

from __future__ import annotations

import os

import psycopg
from psycopg import conninfo, sql

from b2bdwh.db import parse


def _nodes(variable: str) -> list[tuple[str, int]]:
    nodes = []
    for item in filter(None, (part.strip() for part in os.environ.get(variable, "").split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{variable}: {item!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def workers() -> list[tuple[str, int]]:
    """The Citus workers new warehouse databases use, from B2B_CITUS_WORKERS."""
    return _nodes("B2B_CITUS_WORKERS")


def enabled() -> bool:
    return bool(workers())


def _on_node(dsn: str, host: str, port: int, dbname: str) -> str:
    settings = {k: v for k, v in parse(dsn).items() if k not in ("host", "hostaddr", "port")}
    return conninfo.make_conninfo(**{**settings, "host": host, "port": str(port), "dbname": dbname})


def prepare(dsn: str) -> None:
    """Make the warehouse database at dsn a Citus database with the configured workers:
    the database and the extension on each worker, the extension on the coordinator,
    and the workers in its metadata. Idempotent."""
    dbname = parse(dsn)["dbname"]
    for host, port in workers():
        with psycopg.connect(_on_node(dsn, host, port, "postgres"), autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        with psycopg.connect(_on_node(dsn, host, port, dbname), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        known = set(conn.execute("SELECT nodename, nodeport FROM pg_dist_node").fetchall())
        for worker in workers():
            if worker not in known:
                conn.execute("SELECT citus_add_node(%s, %s)", worker)


def drop(dsn: str, dbname: str) -> None:
    """Drop a warehouse database's copies on the workers (the coordinator's is the
    caller's to drop)."""
    for host, port in workers():
        with psycopg.connect(_on_node(dsn, host, port, "postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
