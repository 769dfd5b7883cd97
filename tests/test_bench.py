"""Smoke test of `make bench`: the whole benchmark at a tiny scale, on a real database.

It checks that every figure is there and every ratio is positive, not the figures
themselves (a tiny scale says nothing about speed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
TAG = f"smoke{os.getpid()}"


def test_bench_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--scale",
        "0.05",
        "--compare-scale",
        "0.1",
        "--changes",
        "100",
        "--years",
        "3",
        "--pgbench-seconds",
        "2",
        "--bulk-rows",
        "300",
        "--bulk-repeats",
        "1",
        "--db-tag",
        TAG,
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    md = (out / "bench_scale_0_05.md").read_text()
    assert "| figure | value | target | met? |" in md
    assert md in done.stdout
    report = json.loads((out / "bench_scale_0_05.json").read_text())

    env = report["environment"]
    assert env["postgres"].startswith("PostgreSQL")
    assert env["cores"] >= 1 and env["git_commit"] and env["date"] and env["scale"] == 0.05

    assert [s["scale"] for s in report["scales"]] == [0.05, 0.1]
    # --years reaches the generator: the sources' dates span three years.
    assert report["years"] == 3 and "dates over 3 years" in md
    assert "| facts after archiving before " in md and "| archiving one month more, before " in md
    assert all(s["years"] == 3 for s in report["scales"])
    assert all(s["generate"]["first_engage_date"] < "2015-07-01" for s in report["scales"])
    for s in report["scales"]:
        gen = s["generate"]
        assert gen["total_rows"] == sum(gen["rows"].values()) > 0
        assert gen["rows_per_second"] > 0 and gen["max_rss_kb"] > 0
        load = s["initial_load"]
        assert len(load["runs"]) == len(load["bare_runs"]) == 2
        assert all(r["status"] == "succeeded" for r in load["runs"])
        assert load["best_before_validation_s"] > 0 and load["best_validation_s"] > 0
        assert load["best_bare_s"] > 0 and load["ratio_to_bare"] > 0
        inc = s["incremental"]["100"]
        assert inc["status"] == "succeeded" and inc["wall_s"] > 0
        assert inc["before_validation_s"] > 0 and inc["simulate_max_rss_kb"] > 0
        assert "etl.pull_change_window" in inc["steps"]
        assert s["size"]["facts"] > 0 and s["size"]["dwh_mb_per_million_facts"] > 0
        assert s["vacuum_after_load_s"] > 0
        assert set(s["views"]) == {
            "dwh.v_sales_by_month",
            "dwh.v_agent_performance",
            "dwh.v_product_performance",
            "dwh.v_pipeline_by_stage",
            "dwh.v_account_performance",
        }
        assert all(v["median_ms"] > 0 and v["rows"] > 0 for v in s["views"].values())
        assert all(v["server_ms"] > 0 for v in s["views"].values())
        questions = [q["question"].split("(")[0] for q in s["as_of"]]
        assert questions == [
            "dwh.open_pipeline_as_of",
            "dwh.stage_durations",
            "dwh.stage_conversion",
        ], s["as_of"]
        assert s["as_of"][0]["calls"] >= 89 and all(q["max_ms"] > 0 for q in s["as_of"])
        # Issue 14, with --years: everything hot before, a two-year horizon over the data
        # then: the CRM archives, the warehouse applies it and moves its facts, twice.
        arch = s["archiving"]
        assert arch["before"]["cold"]["facts"] == 0 < arch["before"]["hot"]["facts"]
        assert arch["after"]["cold"]["facts"] == arch["first"]["moved"] > 0
        assert arch["vacuum_after_first_s"] > 0
        for key in ("first", "month"):
            r = arch[key]
            assert r["archived"] > 0 and r["moved"] > 0, r
            assert r["source_s"] > 0 and r["incremental_s"] > 0 and r["move_s"] > 0
        assert arch["month"]["cut_off"] > arch["first"]["cut_off"] == arch["horizon"]
        assert arch["incremental_after"]["status"] == "succeeded"
        assert set(arch["views_after"]) == set(s["views"])
    assert report["incremental_scale_ratio"]["100"] > 0

    bulk = report["capture"]["bulk"]
    for kind in ("update", "insert"):
        assert bulk[kind]["ratio"] > 0
        assert len(bulk[kind]["capture_on_s"]) == len(bulk[kind]["capture_off_s"]) == 1
    for name in ("update_stage", "insert_deal"):
        c = report["capture"]["pgbench"][name]
        assert c["ratio"] > 0 and c["capture_on"]["tps"] > 0 and c["capture_off"]["tps"] > 0
        runs = c["capture_on"]["runs"] + c["capture_off"]["runs"]
        assert len(runs) == 4 and all(r["failed"] == 0 and r["tps"] > 0 for r in runs)
    assert all(v > 0 for v in report["max_rss_mb"].values())
    assert report["run_seconds"] > 0

    # The bench databases are dropped afterwards unless --keep is given.
    with psycopg.connect("dbname=postgres") as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"%{TAG}%",)
        ).fetchall()
    assert not left
