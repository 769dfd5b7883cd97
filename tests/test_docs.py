"""`b2bdwh docs`: the data dictionary written from the catalog and the routine headers; and
the catalog it reads: every routine carries a COMMENT."""

from __future__ import annotations

import re
import subprocess
import sys

import dbtools
from b2bdwh import docs, settings

PROCEDURES = settings.PROJECT_ROOT / "procedures" / "olap"
# Routines of the project's own schemas without a COMMENT; an extension's functions (a member
# of it: pg_depend deptype 'e') are not the project's to document.
UNCOMMENTED_ROUTINES = """
SELECT p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc') IS NOT NULL
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('etl', 'dwh', 'cdc', 'src')
   AND NOT EXISTS (SELECT FROM pg_depend d
                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
 ORDER BY 1
"""


def routine_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the routine table under `heading`, by routine name: [stage, routine, writes,
    summary]."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and "`" in line:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[1].strip("`").split("(")[0]] = cells
    return rows


def test_every_function_and_procedure_carries_a_comment(warehouse):
    for dsn, schemas in ((warehouse.olap_dsn, {"etl", "dwh"}), (warehouse.oltp_dsn, {"cdc"})):
        routines = dbtools.query(dsn, UNCOMMENTED_ROUTINES)
        assert {name.split(".")[0] for name, _ in routines} == schemas, "routines were found"
        assert [name for name, commented in routines if not commented] == []


def test_every_star_schema_table_view_and_table_column_is_documented(warehouse):
    text = docs.dictionary(warehouse.olap_dsn, PROCEDURES)
    relations = dbtools.query(
        warehouse.olap_dsn,
        "SELECT c.relname, c.relispartition FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'dwh' AND c.relkind IN ('r', 'p', 'v') ORDER BY 1",
    )
    assert len(relations) >= 11
    for name, is_part in relations:
        section = text.split(f"### `dwh.{name}` (", 1)[1].split("\n### ", 1)[0]
        assert "_no comment_" not in section, f"dwh.{name} has no COMMENT"
        if is_part:  # its columns are its table's, listed there
            assert "A part of `dwh." in section, section
            continue
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert rows, f"dwh.{name} lists its columns"
        undocumented = [row.split("`")[1] for row in rows if row.rstrip().endswith("|  |")]
        assert undocumented == [], f"dwh.{name}: columns without a COMMENT: {undocumented}"


def test_routines_come_in_pipeline_order_with_what_they_write(warehouse):
    text = docs.dictionary(warehouse.olap_dsn, PROCEDURES)
    routines = text.split("## Routines, in pipeline order", 1)[1].split("\n## ", 1)[0]
    stages = re.findall(r"^\| (\d\d_\w+) \|", routines, re.MULTILINE)
    assert stages == sorted(stages), "stages appear in the order of procedures/olap/"
    assert re.search(
        r"\| 40_facts \| `dwh.load_fact_sales_performance\(p_run_id bigint\)` \| "
        r"dwh.fact_sales_performance",
        routines,
    )
    assert "### Procedure: `etl.run_initial_load(p_batch_size integer)`" in routines


def test_each_routine_shows_its_comment_and_each_table_its_writers(warehouse):
    text = docs.dictionary(warehouse.olap_dsn, PROCEDURES, warehouse.oltp_dsn)
    warehouse_rows = routine_rows(text, "## Routines, in pipeline order")
    source_rows = routine_rows(text, "## Source routines")
    for dsn, rows in ((warehouse.olap_dsn, warehouse_rows), (warehouse.oltp_dsn, source_rows)):
        catalog = dbtools.query(
            dsn,
            "SELECT n.nspname || '.' || p.proname, obj_description(p.oid, 'pg_proc')"
            "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname IN ('etl', 'dwh', 'cdc') AND obj_description(p.oid) IS NOT NULL",
        )
        # One file makes the five capture functions: its row is named after the first.
        one_row = {
            "cdc.capture_products",
            "cdc.capture_sales_agents",
            "cdc.capture_sales_pipeline",
            "cdc.capture_sales_pipeline_archive",
        }
        assert {name for name, _ in catalog if name not in rows} <= one_row, "a row per routine"
        for name, comment in catalog:
            if name in rows:
                assert rows[name][3] == docs.cell(comment), f"{name}: its COMMENT as the summary"
    assert warehouse_rows["dwh.load_dim_account"][2] == "dwh.dim_account"
    assert "cdc.capture_truncate" in source_rows

    dim_account = text.split("### `dwh.dim_account` (table)", 1)[1].split("\n### ", 1)[0]
    writers = re.search(r"^Written by: (.+)\.$", dim_account, re.MULTILINE)
    assert writers, "a table names the routines that write it"
    assert {"`dwh.load_dim_account`", "`dwh.upsert_dim_account`"} <= set(
        writers.group(1).split(", ")
    )
    run = text.split("### `etl.run` (table)", 1)[1].split("\n### ", 1)[0]
    assert "`etl.start_run`" in run.split("Written by: ", 1)[1].splitlines()[0]
    view = text.split("### `dwh.v_sales_by_month` (view)", 1)[1].split("\n### ", 1)[0]
    assert "Written by" not in view


def test_written_tables_reads_names_patterns_and_every_schema_table():
    assert docs.written_tables("etl.stage_*, etl.run, every dwh table.") == [
        "etl.stage_*",
        "etl.run",
        "dwh.*",
    ]
    routines = [{"name": "etl.x(p bigint)", "writes": "etl.stage_*; alters p_table"}]
    assert docs.writers_of("etl.stage_accounts", routines) == ["etl.x"]
    assert docs.writers_of("etl.run", routines) == []


def test_the_command_writes_the_file(warehouse, tmp_path):
    out = tmp_path / "dictionary.md"
    proc = subprocess.run(
        [sys.executable, "-m", "b2bdwh", "docs", "--out", str(out)],
        env={
            **dbtools.os.environ,
            "B2B_OLAP_DSN": warehouse.olap_dsn,
            "B2B_OLTP_DSN": warehouse.oltp_dsn,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}: ")
    assert out.read_text().startswith("# Data dictionary: b2b_sales_olap")
