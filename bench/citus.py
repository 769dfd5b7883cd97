"""The warehouse on one server and on the local Citus cluster, the same work timed on each.

    .venv/bin/python bench/citus.py --scale 100 --changes 10000

On each cluster (the project's, db/cluster.sh; the Citus one, db/citus.sh: a coordinator
and two workers, all on this machine) in fresh databases of its own: migrate, generate the
source, the initial load, simulated CRM changes, the incremental update. Prints the wall
time of each load, its steps' times from etl.loading_metadata and whether every validation
check passed, and writes the table to bench/out/citus_scale_<scale>.md. Not part of make
test; make bench measures one server in depth. On a 2-core machine three servers share the
cores: the figures show what distribution costs here, not what it buys.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
B2BDWH = ROOT / ".venv" / "bin" / "b2bdwh"
OLTP, OLAP = "bench_citus_oltp", "bench_citus_olap"

STEPS = """
SELECT m.step, round(extract(epoch FROM m.finished_at - m.started_at)::numeric, 2)
  FROM etl.loading_metadata AS m
 WHERE m.run_id = (SELECT max(run_id) FROM etl.run)
 ORDER BY m.loading_metadata_id
"""
RUN = """
SELECT r.status, (SELECT bool_and(v.passed) FROM etl.validation_result AS v
                   WHERE v.run_id = r.run_id)
  FROM etl.run AS r ORDER BY r.run_id DESC LIMIT 1
"""


def cluster_env(script: str) -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "db" / script), "env"], check=True, capture_output=True, text=True
    ).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "B2B_"))}
    env.update(re.findall(r"(\w+)='([^']*)'", out))
    env.update(B2B_OLTP_DSN=f"dbname={OLTP}", B2B_OLAP_DSN=f"dbname={OLAP}")
    return env


def admin(env: dict[str, str]) -> str:
    return f"host={env['PGHOST']} port={env['PGPORT']} user={env['PGUSER']} dbname=postgres"


def drop(env: dict[str, str]) -> None:
    nodes = [admin(env)]
    for worker in filter(None, env.get("B2B_CITUS_WORKERS", "").split(",")):
        host, port = worker.rsplit(":", 1)
        nodes.append(f"host={host} port={port} user={env['PGUSER']} dbname=postgres")
    for node in nodes:
        with psycopg.connect(node, autocommit=True) as conn:
            for name in (OLAP, OLTP):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def b2bdwh(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(B2BDWH), *args], env=env, check=True, capture_output=True, text=True)


def load(env: dict[str, str], statement: str) -> dict:
    dsn = f"host={env['PGHOST']} port={env['PGPORT']} user={env['PGUSER']} dbname={OLAP}"
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)
        wall = time.perf_counter() - started
        status, passed = conn.execute(RUN).fetchone()
        steps = conn.execute(STEPS).fetchall()
    return {"wall": wall, "status": status, "passed": passed, "steps": steps}


def measure(name: str, script: str, scale: float, changes: int) -> dict:
    env = cluster_env(script)
    print(f"[{name}] fresh databases, migrate, generate --scale {scale:g}", flush=True)
    drop(env)
    b2bdwh(env, "migrate")
    b2bdwh(env, "generate", "--scale", f"{scale:g}")
    print(f"[{name}] initial load", flush=True)
    initial = load(env, "CALL etl.run_initial_load()")
    # As make bench does (and autovacuum would, in time): statistics of the loaded tables.
    dsn = f"host={env['PGHOST']} port={env['PGPORT']} user={env['PGUSER']} dbname={OLAP}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    print(f"[{name}] simulate {changes:,} changes, incremental update", flush=True)
    b2bdwh(env, "simulate", "--changes", str(changes), "--seed", "7")
    incremental = load(env, "CALL etl.run_incremental_update()")
    drop(env)
    return {"initial": initial, "incremental": incremental}


def table(results: dict[str, dict], scale: float, changes: int) -> str:
    names = list(results)
    lines = [
        f"# The warehouse on one server and on Citus, scale {scale:g}, {changes:,} changes",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for load_name in ("initial", "incremental"):
        label = "initial load" if load_name == "initial" else "incremental update"
        row = [
            f"{r[load_name]['wall']:.1f} s ({r[load_name]['status']}, "
            f"checks {'all passed' if r[load_name]['passed'] else 'FAILED'})"
            for r in results.values()
        ]
        lines.append(f"| **{label}** | " + " | ".join(row) + " |")
        steps = [s for s, _ in results[names[0]][load_name]["steps"]]
        for step in steps:
            cells = []
            for r in results.values():
                took = dict(r[load_name]["steps"]).get(step)
                cells.append("" if took is None else f"{took} s")
            lines.append(f"| {label}: {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=100)
    p.add_argument("--changes", type=int, default=10_000)
    p.add_argument("--one-server", action="store_true", help="the project's cluster only")
    args = p.parse_args(argv)
    available = subprocess.run(["bash", str(ROOT / "db" / "citus.sh"), "available"]).returncode
    if available != 0 and not args.one_server:
        print("Citus is not installed: make citus CITUS_SRC=<citus source tree>", file=sys.stderr)
        return 2
    subprocess.run(["bash", str(ROOT / "db" / "cluster.sh"), "up"], check=True)
    results = {"one server": measure("one server", "cluster.sh", args.scale, args.changes)}
    if not args.one_server:
        subprocess.run(["bash", str(ROOT / "db" / "citus.sh"), "up"], check=True)
        results["Citus, 3 nodes"] = measure("citus", "citus.sh", args.scale, args.changes)
    text = table(results, args.scale, args.changes)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"citus_scale_{args.scale:g}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
