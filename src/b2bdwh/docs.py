"""`b2bdwh docs`: the warehouse's data dictionary, as Markdown, from the catalog and the
routine headers.

Tables and views come from the warehouse's catalog (their COMMENTs give the grain,
the column COMMENTs the meaning); routines from the header that opens each file
under procedures/olap/ (their contract) and their COMMENT in the catalog (its one-line
summary), with the tables each one says it writes; each table lists the routines that
write it. The source's routines (procedures/oltp/: change capture) follow, with their
COMMENTs from the source database.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
from pathlib import Path

from b2bdwh import settings
from b2bdwh.db import connect

HELP = "write the warehouse's data dictionary (tables, columns, views, routines) as Markdown"

SCHEMAS = ("dwh", "etl", "src")

RELATIONS = """
SELECT n.nspname, c.relname,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'f' THEN 'foreign table'
                      WHEN 'p' THEN 'table' END,
       coalesce(obj_description(c.oid, 'pg_class'), ''),
       -- a part of a partitioned table: which, and its bound (its columns are the table's)
       CASE WHEN c.relispartition
            THEN format('A part of `%%s`, %%s.', i.inhparent::regclass,
                        pg_get_expr(c.relpartbound, c.oid)) END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relispartition
 WHERE n.nspname = ANY (%s) AND c.relkind IN ('r', 'v', 'f', 'p')
 ORDER BY array_position(%s, n.nspname::text), c.relkind <> 'r', c.relname
"""
COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(col_description(a.attrelid, a.attnum), '')
  FROM pg_attribute a
 WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""
# The COMMENT of every routine and view, by schema-qualified name (no overloads here).
SUMMARIES = """
SELECT n.nspname || '.' || p.proname, obj_description(p.oid, 'pg_proc')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY (%(schemas)s)
UNION ALL
SELECT n.nspname || '.' || c.relname, obj_description(c.oid, 'pg_class')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY (%(schemas)s) AND c.relkind = 'v'
"""
SOURCE_SCHEMAS = ("cdc", "public")
HEADER_NAME = re.compile(
    r"^--\s*(Procedure|Function|View|Trigger functions?|Configuration):\s*(.+)$"
)
WRITES = re.compile(r"writes\s+(.+)", re.IGNORECASE)


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def tables_block(header: list[str]) -> str:
    """The header's `Tables:` entry, with its continuation lines, as one line."""
    block: list[str] = []
    for line in header:
        if line.startswith("Tables:"):
            block = [line.removeprefix("Tables:")]
        elif block and re.match(r"^[A-Z][\w ]*:", line):
            break
        elif block:
            block.append(line)
    return " ".join(" ".join(block).split())


def written_tables(writes: str) -> list[str]:
    """The tables a header's `writes` entry names: schema-qualified names, `etl.stage_*`
    patterns, and `every dwh table` as `dwh.*`."""
    writes = re.sub(r"every (\w+) table", r"\1.*", writes)
    return re.findall(r"\b(?:dwh|etl|src|cdc|public)\.[\w*]+", writes)


def writers_of(table: str, routines: list[dict[str, str]]) -> list[str]:
    """The routines whose header says they write `table` (patterns such as etl.stage_* match)."""
    return [
        r["name"].split("(")[0]
        for r in routines
        if any(fnmatch.fnmatchcase(table, written) for written in written_tables(r["writes"]))
    ]


def summaries(dsn: str, schemas: tuple[str, ...]) -> dict[str, str]:
    with connect(dsn) as conn:
        rows = conn.execute(SUMMARIES, {"schemas": list(schemas)}).fetchall()
    return {name: comment or "" for name, comment in rows}


def routine_headers(procedures_dir: Path) -> list[dict[str, str]]:
    """Every routine file's header: kind, signature, its contract, the tables it writes."""
    routines = []
    for path in sorted(procedures_dir.rglob("*.sql")):
        lines = path.read_text().splitlines()
        header = []
        for line in lines:
            if not line.startswith("--"):
                break
            header.append(line[2:].strip() if len(line) > 2 else "")
        if not header:
            continue
        # The signature may go on over several lines: open parentheses, a trailing comma
        # (a list of routines), or its RETURNS clause.
        first, rest = header[0], 1
        while rest < len(header) and (
            first.count("(") > first.count(")")
            or first.endswith(",")
            or header[rest].startswith("RETURNS ")
        ):
            first, rest = f"{first} {header[rest]}", rest + 1
        match = HEADER_NAME.match("-- " + first)
        kind, name = (match.group(1), match.group(2)) if match else ("File", path.stem)
        tables = ""
        if written := WRITES.search(tables_block(header)):
            tables = written.group(1).rstrip(".")
        routines.append(
            {
                "stage": path.parent.name,
                "file": str(path.relative_to(procedures_dir.parents[1])),
                "kind": kind,
                "name": name,
                "contract": "\n".join(header[rest:]).strip(),
                "writes": tables,
            }
        )
    return routines


def routine_sections(routines: list[dict[str, str]], summary: dict[str, str]) -> list[str]:
    """A table of the routines (stage, name, what each writes, its COMMENT), then each one's
    header contract."""
    out = ["| stage | routine | writes | summary (COMMENT) |", "|---|---|---|---|"]
    for r in routines:
        comment = summary.get(r["name"].split("(")[0], "")
        out.append(
            f"| {r['stage']} | `{cell(r['name'])}` | {cell(r['writes'])} | {cell(comment)} |"
        )
    out.append("")
    for r in routines:
        out += [f"### {r['kind']}: `{r['name']}`", "", f"`{r['file']}`", ""]
        if comment := summary.get(r["name"].split("(")[0]):
            out += [cell(comment), ""]
        out += ["```", r["contract"], "```", ""]
    return out


def dictionary(dsn: str, procedures_dir: Path, source_dsn: str | None = None) -> str:
    """The data dictionary of the warehouse at `dsn`, with the routines of `procedures_dir`
    (procedures/olap) and, next to it, procedures/oltp, whose COMMENTs come from the source
    database at `source_dsn` when given."""
    routines = routine_headers(procedures_dir)
    out = [
        "# Data dictionary: b2b_sales_olap",
        "",
        "Generated by `b2bdwh docs` from the warehouse's catalog and the routine headers "
        "in `procedures/olap/`.",
        "",
    ]
    with connect(dsn) as conn:
        relations = conn.execute(RELATIONS, (list(SCHEMAS), list(SCHEMAS))).fetchall()
        schema = None
        for nspname, relname, kind, comment, part_of in relations:
            if nspname != schema:
                schema = nspname
                out += [f"## Schema `{schema}`", ""]
            out += [f"### `{nspname}.{relname}` ({kind})", "", cell(comment) or "_no comment_", ""]
            if part_of:
                out += [part_of, ""]
                continue
            if kind != "view" and (writers := writers_of(f"{nspname}.{relname}", routines)):
                out += ["Written by: " + ", ".join(f"`{w}`" for w in writers) + ".", ""]
            out += ["| column | type | null | meaning |", "|---|---|---|---|"]
            for name, type_, notnull, meaning in conn.execute(COLUMNS, (nspname, relname)):
                null = "not null" if notnull else ""
                out.append(f"| `{name}` | {type_} | {null} | {cell(meaning)} |")
            out.append("")
    out += ["## Routines, in pipeline order", ""]
    out += routine_sections(routines, summaries(dsn, SCHEMAS))
    source_dir = procedures_dir.parent / "oltp"
    if source_dir.is_dir():
        source_summary = summaries(source_dsn, SOURCE_SCHEMAS) if source_dsn else {}
        out += ["## Source routines (`b2b_sales`, `procedures/oltp/`)", ""]
        out += routine_sections(routine_headers(source_dir), source_summary)
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/data_dictionary.md"),
        help="where to write it (default docs/data_dictionary.md; - for standard output)",
    )


def run(args: argparse.Namespace) -> int:
    text = dictionary(
        settings.olap_dsn(), settings.PROJECT_ROOT / "procedures" / "olap", settings.oltp_dsn()
    )
    if str(args.out) == "-":
        print(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    tables = text.count("\n### `")
    print(
        f"wrote {args.out}: {tables} tables and views, "
        "and the routines of procedures/olap/ and procedures/oltp/"
    )
    return 0
