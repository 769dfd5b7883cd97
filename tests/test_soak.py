"""Smoke test of `make soak`: 20 seconds of CRM writers and incremental runs at a tiny
scale, then the report. The soak's own verdict (no change lost, the warehouse equals a
fresh load) must hold, and its lost-change count must see a change no run applied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
TAG = f"smoke{os.getpid()}"


@pytest.mark.slow
def test_a_short_soak_loses_nothing_and_ends_like_a_fresh_load(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "soak.py"),
        *("--seconds", "20", "--scale", "0.05", "--writers", "3", "--rate", "20"),
        *("--interval", "1", "--db-tag", TAG, "--out", str(out), "--keep"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    sys.path.insert(0, str(ROOT / "bench"))
    import soak

    dbs = soak.Databases(f"{TAG}_0_05")
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        md = (out / "soak.md").read_text()
        assert md in done.stdout and "Result: PASSED" in md
        report = json.loads((out / "soak.json").read_text())
        writers, arrivals, runs = report["writers"], report["arrivals"], report["runs"]
        assert writers["changes"] >= 200 and writers["errors"] == []
        # Every committed change was captured (a change that touched no row is not).
        assert 0.9 * writers["changes"] <= arrivals["changes_logged"] <= writers["changes"]
        assert arrivals["lost_changes"] == 0
        assert runs["completed"] >= 5 and runs["failed"] == []
        assert arrivals["runs_that_applied_changes"] >= 5
        assert 0 < arrivals["lag_p50_s"] <= arrivals["lag_max_s"] < 30
        assert report["differences"] == [] and report["consistency_problems"] == []

        # A change committed after the last run is counted lost.
        with psycopg.connect(dbs.dsn("oltp"), autocommit=True) as conn:
            conn.execute("UPDATE public.accounts SET revenue = revenue + 1 WHERE account_id = 1")
        after = soak.change_arrivals(dbs, arrivals["after_change_id"])
        assert after["lost_changes"] == 1
        assert after["changes_logged"] == arrivals["changes_logged"] + 1
    finally:
        dbs.drop()
    with psycopg.connect("dbname=postgres") as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"%{TAG}%",)
        ).fetchall()
    assert not left
