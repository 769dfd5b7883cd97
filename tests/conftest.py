"""Shared fixtures, and pgTAP files collected as pytest tests.

tests/pgtap/<target>/NN_area.sql runs with psql in a fresh copy of that
target's migrated template; each TAP line becomes its own pytest result, and a
file that dies early or misses its plan fails a final `plan` item.

`pytest --citus` runs the tests against the local Citus cluster (db/citus.sh:
a coordinator holding the source, and two workers): every warehouse a test
makes is distributed. Where Citus is not installed, every test is skipped with
one line saying so; where it is and the cluster does not answer, they fail.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import dbtools

CITUS_MISSING = (
    "Citus is not installed for this PostgreSQL: "
    "`make citus CITUS_SRC=<citus source tree>` builds it"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--citus",
        action="store_true",
        help="run against the local Citus cluster (db/citus.sh), every warehouse distributed",
    )


def citus_available() -> bool:
    script = dbtools.ROOT / "db" / "citus.sh"
    return subprocess.run(["bash", str(script), "available"], capture_output=True).returncode == 0


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("citus"):
        if not citus_available():
            return
        dbtools.load_env("citus.sh")
    dbtools.load_cluster_env()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("citus") and not citus_available():
        skip = pytest.mark.skip(reason=CITUS_MISSING)
        for item in items:
            item.add_marker(skip)


TAP_LINE = re.compile(r"^(not ok|ok) (\d+)(?: - (.*?))?(\s+# (?:SKIP|TODO).*)?$")
TAP_PLAN = re.compile(r"^1\.\.(\d+)$")


@pytest.fixture(scope="module")
def oltp_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated, empty source database for this test module alone."""
    name, dsn = dbtools.fresh_oltp(request.module.__name__)
    yield dsn
    dbtools.drop_database(name)


@pytest.fixture(scope="module")
def warehouse(request: pytest.FixtureRequest) -> Iterator[dbtools.Warehouse]:
    """A migrated, empty source and a warehouse reading it, for this test module alone."""
    pair = dbtools.fresh_warehouse(request.module.__name__)
    yield pair
    pair.drop()


@dataclass
class TapResult:
    number: int
    ok: bool
    description: str
    diagnostics: str
    directive: str


def run_pgtap(path: str, dsn: str) -> tuple[list[TapResult], int | None, str]:
    """Run one pgTAP file; returns its results, its plan, and psql's errors."""
    proc = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", path],
        capture_output=True,
        text=True,
        check=False,
    )
    results: list[TapResult] = []
    plan = None
    for line in proc.stdout.splitlines():
        if m := TAP_PLAN.match(line.strip()):
            plan = int(m.group(1))
        elif m := TAP_LINE.match(line.strip()):
            results.append(
                TapResult(
                    int(m.group(2)),
                    m.group(1) == "ok",
                    m.group(3) or "",
                    "",
                    (m.group(4) or "").strip(),
                )
            )
        elif line.startswith("#") and results:
            results[-1].diagnostics += line + "\n"
    errors = proc.stderr.strip() if proc.returncode != 0 else ""
    return results, plan, errors


class PgTapFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        target = self.path.parent.name
        if target == "oltp":
            name, dsn = dbtools.fresh_oltp(f"tap_{self.path.stem}")
            cleanup = [name]
        elif target == "olap":
            pair = dbtools.fresh_warehouse(f"tap_{self.path.stem}")
            dsn, cleanup = pair.olap_dsn, [pair.olap_name, pair.oltp_name]
        else:
            raise pytest.UsageError(f"{self.path}: pgTAP files live in tests/pgtap/oltp|olap/")
        try:
            results, plan, errors = run_pgtap(str(self.path), dsn)
        finally:
            for name in cleanup:
                dbtools.drop_database(name)
        for result in results:
            label = f"{result.number:03d} {result.description}".strip()
            yield PgTapAssertion.from_parent(self, name=label, result=result)
        yield PgTapPlan.from_parent(self, name="plan", plan=plan, ran=len(results), errors=errors)


class PgTapAssertion(pytest.Item):
    def __init__(self, *, result: TapResult, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.result = result

    def runtest(self) -> None:
        if self.result.directive.upper().startswith("# SKIP"):
            pytest.skip(self.result.directive)
        if not self.result.ok:
            raise PgTapFailure(self.result.diagnostics or "(no diagnostics)")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, PgTapFailure):
            return (
                f"pgTAP: not ok {self.result.number} - {self.result.description}\n{excinfo.value}"
            )
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}: {self.name}"


class PgTapPlan(pytest.Item):
    def __init__(self, *, plan: int | None, ran: int, errors: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.plan, self.ran, self.errors = plan, ran, errors

    def runtest(self) -> None:
        if self.errors:
            raise PgTapFailure(f"psql stopped with an error after {self.ran} tests:\n{self.errors}")
        if self.plan is None:
            raise PgTapFailure("no plan: the file must start with SELECT plan(N)")
        if self.plan != self.ran:
            raise PgTapFailure(f"planned {self.plan} tests but ran {self.ran}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, PgTapFailure):
            return f"pgTAP {self.path.name}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}: plan"


class PgTapFailure(Exception):
    pass


def pytest_collect_file(parent: pytest.Collector, file_path) -> pytest.Collector | None:
    if file_path.suffix == ".sql" and file_path.parent.parent.name == "pgtap":
        return PgTapFile.from_parent(parent, path=file_path)
    return None
