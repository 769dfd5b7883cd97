"""Connections with errors a person can act on."""

from __future__ import annotations

import os

import psycopg
from psycopg import conninfo

UP_HINT = (
    '  Is the database server up? Run `make up` (and `make migrate`), then `eval "$(make -s env)"`.'
)


class CliError(Exception):
    """A failure to report in one clear line and exit non-zero, without a stack trace.
    exit_code: 1 unless the command gives the failure another meaning."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Unreachable(CliError):
    """The connection failed: the server did not answer, or refused the login."""


def parse(dsn: str) -> dict[str, str]:
    """The settings of a libpq connection string; a malformed one is a CliError."""
    try:
        return conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CliError(f"not a valid libpq connection string: {dsn!r} ({reason})") from exc


def connect(dsn: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """Open a connection, turning 'cannot connect' into a CliError that says what to do. The
    hint to start the server comes only when no server answered: a server that refused
    the login (no such user or database, a wrong password) is up."""
    parse(dsn)
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        message = " ".join(str(exc).split())
        # libpq quotes the server's own refusal as "FATAL: ..."; no server, no FATAL.
        answered = "FATAL:" in message
        raise Unreachable(
            f"cannot connect to {describe(dsn)}: {message}" + ("" if answered else "\n" + UP_HINT)
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
    params = parse(dsn)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**params)
