"""The CRM source tables and the one way their contents are replaced.

`generate` and `import-csv` both replace the source all or nothing: inside
the caller's transaction, the four tables are emptied and refilled with COPY.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

# Parents before children: the order to fill them in.
SOURCE_TABLES: dict[str, tuple[str, ...]] = {
    "accounts": (
        "account_id",
        "account_name",
        "sector",
        "year_established",
        "revenue",
        "employees",
        "office_location",
        "parent_account_id",
    ),
    "products": ("product_id", "product_name", "series", "sales_price"),
    "sales_agents": ("sales_agent_id", "sales_agent_name", "manager_name", "regional_office"),
    "sales_pipeline": (
        "opportunity_id",
        "sales_agent_id",
        "product_id",
        "account_id",
        "deal_stage",
        "engage_date",
        "close_date",
        "close_value",
    ),
}


# The CRM's archive of closed deals (public.archive_closed_deals): emptied with the
# four tables when the source is replaced, never filled by generate or import-csv.
ARCHIVE_TABLE = "sales_pipeline_archive"


def truncate_source(conn: psycopg.Connection) -> None:
    """Empty the four tables and the deals' archive (inside the caller's transaction) and
    restart their keys."""
    tables = sql.SQL(", ").join(
        sql.Identifier("public", t) for t in (*SOURCE_TABLES, ARCHIVE_TABLE)
    )
    conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(tables))


def copy_rows(
    conn: psycopg.Connection,
    table: str,
    rows: Iterable[Sequence[object]],
    columns: Sequence[str] | None = None,
) -> int:
    """COPY rows into one source table; returns the number of rows written."""
    cols = columns or SOURCE_TABLES[table]
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier("public", table), sql.SQL(", ").join(map(sql.Identifier, cols))
    )
    count = 0
    with conn.cursor().copy(query) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def resync_identities(conn: psycopg.Connection) -> None:
    """After COPY with explicit keys, make the identity columns continue above them."""
    for table, columns in SOURCE_TABLES.items():
        key = columns[0]
        if table == "sales_pipeline":
            continue  # text key, no identity
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({tbl}, {col}), "
                "coalesce((SELECT max({key}) FROM {qt}), 0) + 1, false)"
            ).format(
                tbl=sql.Literal(f"public.{table}"),
                col=sql.Literal(key),
                key=sql.Identifier(key),
                qt=sql.Identifier("public", table),
            )
        )


def counts(conn: psycopg.Connection) -> dict[str, int]:
    """Rows per source table."""
    result = {}
    for table in SOURCE_TABLES:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table))
        row = conn.execute(query).fetchone()
        result[table] = int(row[0]) if row else 0
    return result
