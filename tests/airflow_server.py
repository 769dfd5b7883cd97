"""The standalone Airflow of `make airflow` (`b2bdwh airflow serve`) in a test: free ports,
waiting for it, and stopping it with everything it started. Shared by test_airflow_ui.py
(through the REST API) and test_airflow_cli.py (through the `airflow` command line)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

# What `make airflow` runs (test_airflow_ui.test_make_airflow_runs_the_command_tested_here).
SERVE = [sys.executable, "-m", "b2bdwh", "airflow", "serve"]
STARTUP_TIMEOUT = 240  # seconds: four Airflow processes on a busy two-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, server: subprocess.Popen):
    """Poll `check` until it returns something truthy; fail when the server exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`b2bdwh airflow serve` exited with code {server.returncode} ({what})")
        try:
            if result := check():
                return result
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server and everything it started: its process group (its own session)."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(server.pid, 0)  # anyone left in the group?
            except ProcessLookupError:
                server.wait()
                return
            server.poll()  # reap the leader, or it stays a zombie member of the group
            time.sleep(0.2)
