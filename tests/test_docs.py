"""`b2bdwh docs`: the data dictionary written from the catalog and the routine headers."""

from __future__ import annotations

import re
import subprocess
import sys

import dbtools
from b2bdwh import docs, settings


def test_every_star_schema_table_view_and_table_column_is_documented(warehouse):
    text = docs.dictionary(warehouse.olap_dsn, settings.PROJECT_ROOT / "procedures" / "olap")
    relations = dbtools.query(
        warehouse.olap_dsn,
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'dwh' AND c.relkind IN ('r', 'v') ORDER BY 1",
    )
    assert len(relations) >= 11
    for name, _relkind in relations:
        section = text.split(f"### `dwh.{name}` (", 1)[1].split("\n### ", 1)[0]
        assert "_no comment_" not in section, f"dwh.{name} has no COMMENT"
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert rows, f"dwh.{name} lists its columns"
        undocumented = [row.split("`")[1] for row in rows if row.rstrip().endswith("|  |")]
        assert undocumented == [], f"dwh.{name}: columns without a COMMENT: {undocumented}"


def test_routines_come_in_pipeline_order_with_what_they_write(warehouse):
    text = docs.dictionary(warehouse.olap_dsn, settings.PROJECT_ROOT / "procedures" / "olap")
    routines = text.split("## Routines, in pipeline order", 1)[1]
    stages = re.findall(r"^\| (\d\d_\w+) \|", routines, re.MULTILINE)
    assert stages == sorted(stages), "stages appear in the order of procedures/olap/"
    assert re.search(
        r"\| 40_facts \| `dwh.load_fact_sales_performance\(p_run_id bigint\)` \| "
        r"dwh.fact_sales_performance",
        routines,
    )
    assert "### Procedure: `etl.run_initial_load(p_batch_size integer)`" in routines


def test_the_command_writes_the_file(warehouse, tmp_path):
    out = tmp_path / "dictionary.md"
    proc = subprocess.run(
        [sys.executable, "-m", "b2bdwh", "docs", "--out", str(out)],
        env={**dbtools.os.environ, "B2B_OLAP_DSN": warehouse.olap_dsn},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}: ")
    assert out.read_text().startswith("# Data dictionary: b2b_sales_olap")
