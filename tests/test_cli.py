"""The `b2bdwh` command line as a shell user meets it, through the real command in a child
process: no command prints the command list; a reader that stops early (`| head -1`) ends it
quietly; a malformed connection string is one line; the hint to start the server comes only
when no server answered."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import dbtools
from b2bdwh.cli import SUBCOMMANDS

B2BDWH = [sys.executable, "-m", "b2bdwh"]
UP_HINT = "Is the database server up? Run `make up`"


def b2bdwh(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*B2BDWH, *args],
        env={**os.environ, "AIRFLOW_HOME": "", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_no_command_prints_the_command_list_as_a_usage_error():
    """As argparse does for a missing required argument: the help on stderr, exit 2."""
    proc = b2bdwh()
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == b2bdwh("--help").stdout
    for name in SUBCOMMANDS:
        assert f"    {name}" in proc.stderr


@pytest.fixture(scope="module")
def loaded(warehouse: dbtools.Warehouse) -> dbtools.Warehouse:
    from b2bdwh.generate import generate

    generate(warehouse.oltp_dsn, 0.05)
    dbtools.execute(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    return warehouse


@pytest.mark.parametrize(
    "args",
    [["docs", "--out", "-"], ["status"], ["summary"], ["migrate", "status", "--verbose"]],
    ids=" ".join,
)
def test_a_reader_that_stops_early_ends_the_command_quietly(loaded, args):
    """`b2bdwh ... | head -1`: the first line, no BrokenPipeError traceback. The command's own
    verdict stands when it had finished (status: 0 healthy); cut off mid-way, 141 as for
    any writer killed by SIGPIPE."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": "",
        "B2B_OLAP_DSN": loaded.olap_dsn,
        "B2B_OLTP_DSN": loaded.oltp_dsn,
    }
    command = " ".join(["exec", *B2BDWH, *args])
    # The reader closes the pipe at once, before the command writes: every write fails.
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -c 0; echo exit=${{PIPESTATUS[0]}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.stderr == "", proc.stderr
    code = int(proc.stdout.strip().rsplit("exit=", 1)[1])
    assert code == 0 if args[0] == "status" else code in (0, 141), proc.stdout
    first = subprocess.run(
        ["bash", "-c", f"{command} | head -1"], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.stderr == "" and len(first.stdout.splitlines()) == 1, first.stderr


def test_a_malformed_connection_string_is_one_line():
    proc = b2bdwh("status", B2B_OLAP_DSN="dbname=x foo=bar")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "b2bdwh status: not a valid libpq connection string: 'dbname=x foo=bar'"
        ' (invalid connection option "foo")'
    ]
    migrate = b2bdwh("migrate", "--dry-run", B2B_OLTP_DSN="dbname=x foo=bar")
    assert migrate.returncode == 1
    assert len(migrate.stderr.splitlines()) == 1 and "Traceback" not in migrate.stderr


def test_the_hint_to_start_the_server_only_when_no_server_answered(loaded, tmp_path):
    down = b2bdwh("summary", B2B_OLAP_DSN=f"host={tmp_path} port=1 dbname=nowhere")
    assert down.returncode == 1 and UP_HINT in down.stderr, down.stderr
    for wrong in ("dbname=no_such_database", f"{loaded.olap_dsn} user=no_such_role"):
        proc = b2bdwh("summary", B2B_OLAP_DSN=wrong)
        assert proc.returncode == 1, proc.stderr
        assert "cannot connect to database" in proc.stderr and "does not exist" in proc.stderr
        assert UP_HINT not in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
