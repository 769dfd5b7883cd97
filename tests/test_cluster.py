"""db/cluster.sh and the make targets: packages are installed before the server starts, and a
server whose binary changed under it (a package upgrade) is restarted by `up`.

A throwaway cluster of its own: db/cluster.sh (and db/common.sh) copied into a temporary
root (its data lives in that root's .pgdata), run with PG_BIN pointing at a directory of
links to the real server binaries. Its `postgres` is a script that runs the real one but can report
another version, as an upgraded package's would; pg_ctl and initdb find the real
`postgres` next to their own resolved path, so the server itself is the real one. An
`apt-get` first on PATH stands in for the package manager: it records whether the server
was running when it was called and, when told to, "upgrades" the server binary.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from dbtools import ROOT


def real_bindir() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    assert initdb, "PostgreSQL server binaries not found"
    return Path(initdb).parent


@dataclass
class Throwaway:
    root: Path
    bindir: Path
    env: dict[str, str]
    apt_log: Path
    port: int

    def up(self) -> str:
        proc = subprocess.run(
            ["bash", str(self.root / "db" / "cluster.sh"), "up"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stderr

    def state(self) -> Path:
        return (self.root / ".pgdata").resolve()

    def postmaster(self) -> tuple[int, object]:
        """The running postmaster's pid and start time, as the server reports them."""
        with psycopg.connect(
            host=str(self.state() / "run"), port=self.port, user="postgres", dbname="postgres"
        ) as conn:
            row = conn.execute(
                "SELECT pg_postmaster_start_time(), (SELECT setting FROM pg_settings"
                " WHERE name = 'data_directory')"
            ).fetchone()
        assert row is not None
        pid = int((Path(row[1]) / "postmaster.pid").read_text().split()[0])
        return pid, row[0]

    def set_version(self, text: str) -> None:
        (self.bindir / "version").write_text(text + "\n")

    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


@pytest.fixture
def throwaway() -> Iterator[Throwaway]:
    real = real_bindir()
    # Under /tmp and readable by all: the server's OS user (postgres, when root runs
    # this) must reach the data directory and the links.
    root = Path(tempfile.mkdtemp(prefix="b2bdwh-cluster-", dir="/tmp"))
    root.chmod(0o755)
    (root / "db").mkdir()
    shutil.copy(ROOT / "db" / "cluster.sh", root / "db" / "cluster.sh")
    shutil.copy(ROOT / "db" / "common.sh", root / "db" / "common.sh")
    bindir = root / "bin"
    bindir.mkdir()
    for exe in real.iterdir():
        if exe.name not in ("postgres", "pg_config"):
            (bindir / exe.name).symlink_to(exe)
    real_version = subprocess.run(
        [str(real / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (bindir / "version").write_text(real_version + "\n")
    wrapper = bindir / "postgres"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --version|-V) cat "{bindir}/version"; exit 0 ;; esac\n'
        f'exec "{real}/postgres" "$@"\n'
    )
    wrapper.chmod(0o755)
    # pgTAP looks missing (an empty share directory), so `up` asks apt-get for it.
    share = root / "share"
    (share / "extension").mkdir(parents=True)
    pg_config = bindir / "pg_config"
    pg_config.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = --sharedir ] && {{ echo "{share}"; exit 0; }}\n'
        f'exec "{real}/pg_config" "$@"\n'
    )
    pg_config.chmod(0o755)
    # apt-get: records whether the server runs, and upgrades `postgres` when asked to.
    fakes = root / "fakebin"
    fakes.mkdir()
    apt_log = root / "apt.log"
    apt = fakes / "apt-get"
    apt.write_text(
        "#!/bin/sh\n"
        '[ "$1" = update ] && exit 0\n'
        f'pid=$(head -1 "{root}/.pgdata/data/postmaster.pid" 2>/dev/null)\n'
        'if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then state=running;'
        " else state=stopped; fi\n"
        f'echo "$* while $state" >> "{apt_log}"\n'
        f'if [ -f "{root}/upgrade" ]; then mv "{root}/upgrade" "{bindir}/version"; fi\n'
    )
    apt.chmod(0o755)
    port = 55999
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PGHOST", "PGPORT", "PGUSER", "B2B_OLTP_DSN", "B2B_OLAP_DSN")
    }
    env.update(B2B_PGPORT=str(port), PG_BIN=str(bindir), PATH=f"{fakes}:{env['PATH']}")
    cluster = Throwaway(root, bindir, env, apt_log, port)
    try:
        yield cluster
    finally:
        subprocess.run(
            ["bash", str(root / "db" / "cluster.sh"), "down"],
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        shutil.rmtree(cluster.state(), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_up_installs_before_it_starts_and_restarts_a_server_whose_binary_changed(throwaway):
    as_root = os.geteuid() == 0
    out = throwaway.up()
    assert "started" in out, out
    if as_root:
        # apt-get ran (pgTAP looked missing) while no server was running yet.
        calls = throwaway.apt_calls()
        assert calls and all(call.endswith("while stopped") for call in calls), calls
    first = throwaway.postmaster()

    out = throwaway.up()  # nothing changed: the same server keeps running
    assert "already running" in out and "restarted" not in out, out
    assert throwaway.postmaster() == first

    # A package upgrade of the server while it runs: through apt-get when `up` installs
    # pgTAP (as root), else as if another command had done it.
    major = (throwaway.bindir / "version").read_text().split()[2].split(".")[0]
    upgraded = f"postgres (PostgreSQL) {major}.99 (simulated upgrade)"
    if as_root:
        (throwaway.root / "upgrade").write_text(upgraded + "\n")
    else:
        throwaway.set_version(upgraded)
    out = throwaway.up()
    restarted = [line for line in out.splitlines() if "restarted" in line]
    assert len(restarted) == 1, out
    assert "changed under the running server" in restarted[0], out
    assert restarted[0].endswith(
        f" -> {major}.99 (simulated upgrade)) (socket"
        f" {throwaway.state()}/run, port {throwaway.port})"
    ), out
    if as_root:
        assert throwaway.apt_calls()[-1].endswith("while running")  # it ran, then the check
    second = throwaway.postmaster()
    assert second[0] != first[0] and second[1] > first[1]

    out = throwaway.up()  # and once restarted, it stays up
    assert "already running" in out and "restarted" not in out, out
    assert throwaway.postmaster() == second

    # The binary file replaced by one reporting the same version (a rebuilt package),
    # written beside it and renamed over it, as dpkg does.
    wrapper = throwaway.bindir / "postgres"
    fresh = throwaway.bindir / "postgres.dpkg-new"
    fresh.write_text(wrapper.read_text())
    fresh.chmod(0o755)
    fresh.replace(wrapper)
    out = throwaway.up()
    assert "was replaced since the server started" in out, out
    third = throwaway.postmaster()
    assert third[0] != second[0]

    # A server started without a stamp (by hand, or by an older db/cluster.sh): the
    # binary's change time against the postmaster's start time.
    (throwaway.state() / "server.stamp").unlink()
    out = throwaway.up()
    assert "already running" in out, out
    assert throwaway.postmaster() == third
    (throwaway.state() / "server.stamp").unlink()
    time.sleep(1.1)
    wrapper.chmod(0o755)  # a new change time, as an upgrade writes
    out = throwaway.up()
    assert "changed at" in out and "after the server started" in out, out
    assert throwaway.postmaster()[0] != third[0]


def make_dry_run(target: str) -> list[str]:
    """The commands `make -n target` would run, in order."""
    proc = subprocess.run(
        ["make", "-n", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.splitlines()


@pytest.mark.parametrize("target", ["test", "demo", "up", "migrate"])
def test_make_installs_packages_before_it_starts_the_cluster(target):
    lines = make_dry_run(target)
    starts = [i for i, line in enumerate(lines) if "cluster.sh up" in line]
    installs = [
        i for i, line in enumerate(lines) if "apt-get install" in line or "cluster.sh pgtap" in line
    ]
    assert starts, lines
    assert all(i < starts[0] for i in installs), lines
    if target == "test":
        assert installs, lines


def test_ci_installs_everything_before_make_starts_anything():
    text = (ROOT / ".ci" / "run").read_text()
    first_make = text.index("\nmake ")
    assert text.index("apt-get install") < first_make
    assert text.index("db/cluster.sh pgtap") < first_make
