"""Connections with errors a person can act on."""

from __future__ import annotations

import os

import psycopg
from psycopg import conninfo


class CliError(Exception):
    """A failure to report in one clear line and exit non-zero, without a stack trace."""


def connect(dsn: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """Open a connection, turning 'cannot connect' into a CliError that says what to do."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        where = describe(dsn)
        raise CliError(
            f"cannot connect to {where}: {str(exc).strip()}\n"
            "  Is the database server up? Run `make up` (and `make migrate`), "
            'then `eval "$(make -s env)"`.'
        ) from exc


def describe(dsn: str) -> str:
    """A short 'database X at host:port' label for messages."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return repr(dsn)
    host = params.get("host") or os.environ.get("PGHOST") or "default host"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    return f"database {params.get('dbname', '?')!s} at {host}:{port}"


def with_dbname(dsn: str, dbname: str) -> str:
    """The same connection string pointing at another database on the same server."""
    params = conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**params)
