"""Where the databases are: standard libpq settings plus the B2B_*_DSN overrides."""

from __future__ import annotations

import os
from pathlib import Path

OLTP_DB = "b2b_sales"
OLAP_DB = "b2b_sales_olap"

# The checkout (or installed tree) holding migrations/ and procedures/.
PROJECT_ROOT = Path(os.environ.get("B2B_PROJECT_ROOT", Path(__file__).resolve().parents[2]))


def oltp_dsn() -> str:
    """libpq connection string of the CRM source; PGHOST/PGPORT/PGUSER fill the rest."""
    return os.environ.get("B2B_OLTP_DSN") or f"dbname={OLTP_DB}"


def olap_dsn() -> str:
    """libpq connection string of the warehouse."""
    return os.environ.get("B2B_OLAP_DSN") or f"dbname={OLAP_DB}"


def pipeline_dsn() -> str:
    """The warehouse as the pipeline's runner sees it: logged in as the ETL role
    (B2B_ETL_USER, default b2b_etl), which may execute the pipeline and nothing else.
    B2B_ETL_USER set empty keeps the warehouse DSN's own user."""
    from psycopg import conninfo

    from b2bdwh.db import parse

    user = os.environ.get("B2B_ETL_USER", "b2b_etl")
    if not user:
        return olap_dsn()
    return conninfo.make_conninfo(**{**parse(olap_dsn()), "user": user})


def dsn_for(target: str) -> str:
    """The DSN of a migration target: 'oltp' or 'olap'."""
    if target == "oltp":
        return oltp_dsn()
    if target == "olap":
        return olap_dsn()
    raise ValueError(f"unknown target {target!r}: expected 'oltp' or 'olap'")
