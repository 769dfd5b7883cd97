"""Least privilege, end to end: the ETL role runs both pipelines with nothing but EXECUTE
on the pipeline's routines, a function planted in its search_path is never called, and the
migrations' grants are idempotent and reach objects created after them.

The denials (every role, every forbidden action) are pgTAP: tests/pgtap/*/0?_roles.sql.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import dbtools
import warehouse_compare as wc
from b2bdwh import generate, migrate, simulate

SCALE = 0.05

ACL_SNAPSHOT = """
SELECT 'schema ' || n.nspname, n.nspowner::regrole::text, coalesce(n.nspacl::text, '')
  FROM pg_namespace AS n WHERE n.nspname IN ('dwh', 'etl', 'src')
UNION ALL
SELECT 'relation ' || c.oid::regclass::text, c.relowner::regrole::text, coalesce(c.relacl::text, '')
  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('dwh', 'etl', 'src') AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
UNION ALL
SELECT 'routine ' || p.oid::regprocedure::text, p.proowner::regrole::text,
       coalesce(p.proacl::text, '')
  FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('dwh', 'etl', 'src')
ORDER BY 1
"""


def as_role(dsn: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=role)


@pytest.fixture(scope="module")
def etl_loaded(warehouse: dbtools.Warehouse) -> Iterator[dbtools.Warehouse]:
    """The module's warehouse after an initial load run by b2b_etl."""
    generate.generate(warehouse.oltp_dsn, SCALE)
    dbtools.execute(as_role(warehouse.olap_dsn, "b2b_etl"), "CALL etl.run_initial_load()")
    yield warehouse


def test_the_etl_role_runs_both_pipelines_to_the_same_warehouse_as_a_fresh_load(etl_loaded):
    w = etl_loaded
    etl_dsn = as_role(w.olap_dsn, "b2b_etl")
    assert dbtools.scalar(etl_dsn, "SELECT current_user") == "b2b_etl"
    # The CRM application writes through its own role.
    simulate.simulate(as_role(w.oltp_dsn, "b2b_app"), 300, 11)
    dbtools.execute(etl_dsn, "CALL etl.run_incremental_update()")
    runs = dbtools.query(
        w.olap_dsn, "SELECT pipeline, status, started_by FROM etl.run ORDER BY run_id"
    )
    assert runs == [
        ("initial_load", "succeeded", "b2b_etl"),
        ("incremental_update", "succeeded", "b2b_etl"),
    ]
    fresh_name, fresh_dsn = wc.attach_warehouse(w.oltp_dsn, "roles_fresh")
    try:
        wc.run_initial(fresh_dsn)
        wc.assert_same_live_content(w.olap_dsn, fresh_dsn, w.oltp_dsn)
    finally:
        dbtools.drop_database(fresh_name)


def test_the_reader_answers_the_as_of_questions_of_a_history_the_etl_role_wrote(etl_loaded):
    """The deal history's step runs as b2b_etl like every step; b2b_reader, and only it of
    the two, calls the as-of functions (the denials are pgTAP 08_roles.sql)."""
    w = etl_loaded
    simulate.simulate(as_role(w.oltp_dsn, "b2b_app"), 200, 12)
    dbtools.execute(as_role(w.olap_dsn, "b2b_etl"), "CALL etl.run_incremental_update()")
    reader = as_role(w.olap_dsn, "b2b_reader")
    assert (
        dbtools.scalar(reader, "SELECT count(*) FROM dwh.fact_deal_history WHERE txid IS NOT NULL")
        > 0
    )
    assert dbtools.scalar(reader, "SELECT count(*) FROM dwh.open_pipeline_as_of('2017-06-30')") > 0
    assert (
        dbtools.scalar(
            reader, "SELECT count(*) FROM dwh.stage_durations('2017-04-01', '2017-06-01')"
        )
        > 0
    )
    assert dbtools.scalar(reader, "SELECT count(*) FROM dwh.stage_conversion('2017-04-01')") > 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        dbtools.scalar(
            as_role(w.olap_dsn, "b2b_etl"),
            "SELECT count(*) FROM dwh.open_pipeline_as_of('2017-06-30')",
        )


def planted_functions(dsn: str) -> list[sql.Composable]:
    """CREATE FUNCTION statements for schema hostile: one function for every overload of
    every pg_catalog function whose name the warehouse's procedures use, with the same
    arguments and result, that raises when called."""
    names = set()
    for path in (dbtools.ROOT / "procedures" / "olap").rglob("*.sql"):
        names |= {n.lower() for n in re.findall(r"\b([A-Za-z_]\w*)\s*\(", path.read_text())}
    rows = dbtools.query(
        dsn,
        """SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                  pg_get_function_result(p.oid)
             FROM pg_proc AS p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
              AND p.proname = ANY (%s)
              AND NOT p.proretset
              AND NOT EXISTS (SELECT FROM unnest(p.proargtypes::oid[] || p.prorettype) AS t (oid)
                                JOIN pg_type AS ty ON ty.oid = t.oid WHERE ty.typtype = 'p')""",
        (sorted(names),),
    )
    # Variadic "any" functions (format, concat) cannot be copied: plant the concrete
    # overloads the procedures' calls would match first.
    rows += [
        ("format", f"text, {arg}", "text")
        for arg in ("text", "regproc", "regclass", "bigint", "integer", "numeric", "date")
    ]
    rows += [("concat", "text, text", "text"), ("concat_ws", "text, text, text", "text")]
    return [
        sql.SQL(
            "CREATE FUNCTION hostile.{name}({args}) RETURNS {result} LANGUAGE plpgsql AS "
            "$f$BEGIN RAISE EXCEPTION USING MESSAGE = {message}; END$f$"
        ).format(
            name=sql.Identifier(name),
            args=sql.SQL(args),
            result=sql.SQL(result),
            message=sql.Literal(f"hostile.{name} was called"),
        )
        for name, args, result in rows
    ]


def test_a_function_planted_in_the_callers_search_path_is_never_called(etl_loaded):
    w = etl_loaded
    statements = planted_functions(w.olap_dsn)
    assert len(statements) > 20, "too few functions planted to mean anything"
    with psycopg.connect(w.olap_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA hostile")
        for statement in statements:
            conn.execute(statement)
        # To everyone: a schema its user may not use is skipped in a search path, and the
        # definer functions run as b2b_owner.
        conn.execute("GRANT USAGE ON SCHEMA hostile TO PUBLIC")
        conn.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hostile TO PUBLIC")
        # The planted functions work: a query in that search path calls them.
        conn.execute("SET search_path = hostile, pg_catalog")
        with pytest.raises(psycopg.errors.RaiseException, match="hostile"):
            conn.execute("SELECT clock_timestamp()")
    simulate.simulate(w.oltp_dsn, 100, 12)
    with psycopg.connect(as_role(w.olap_dsn, "b2b_etl"), autocommit=True) as conn:
        conn.execute("SET search_path = hostile, pg_catalog, etl, dwh")
        conn.execute("CALL etl.run_incremental_update()")
        conn.execute("CALL etl.run_initial_load()")
    assert (
        dbtools.query(
            w.olap_dsn, "SELECT message FROM etl.error_log WHERE strpos(message, 'hostile') > 0"
        )
        == []
    )
    assert dbtools.query(w.olap_dsn, "SELECT status FROM etl.run ORDER BY run_id DESC LIMIT 2") == [
        ("succeeded",),
        ("succeeded",),
    ]


def test_migrating_again_changes_no_owner_or_grant(warehouse: dbtools.Warehouse):
    before = dbtools.query(warehouse.olap_dsn, ACL_SNAPSHOT)
    placeholders = migrate.source_placeholders(warehouse.oltp_dsn)
    migrate.migrate(
        dbtools.target("olap", warehouse.olap_dsn, **placeholders), say=lambda _line: None
    )
    assert dbtools.query(warehouse.olap_dsn, ACL_SNAPSHOT) == before


def test_an_object_created_later_gets_the_owner_and_no_public_rights(
    warehouse: dbtools.Warehouse,
):
    dbtools.execute(
        warehouse.olap_dsn,
        "CREATE FUNCTION etl.deployed_later() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    )
    dbtools.execute(
        warehouse.olap_dsn,
        "CREATE PROCEDURE etl.step_deployed_later() LANGUAGE sql AS 'SELECT 1'",
    )
    dbtools.execute(warehouse.olap_dsn, "CREATE TABLE dwh.deployed_later (x int)")
    placeholders = migrate.source_placeholders(warehouse.oltp_dsn)
    migrate.migrate(
        dbtools.target("olap", warehouse.olap_dsn, **placeholders), say=lambda _line: None
    )
    assert dbtools.query(
        warehouse.olap_dsn,
        """SELECT proowner::regrole::text,
                  has_function_privilege('public', oid, 'EXECUTE'),
                  has_function_privilege('b2b_etl', oid, 'EXECUTE'),
                  has_function_privilege('b2b_reader', oid, 'EXECUTE')
             FROM pg_proc WHERE oid IN ('etl.deployed_later()'::regprocedure,
                                        'etl.step_deployed_later()'::regprocedure)
            ORDER BY proname""",
    ) == [
        # A function is internal until afterMigrate's list names it (owner-rights
        # functions must not be callable by the ETL role out of band); a
        # procedure runs with its caller's rights and is the ETL role's to call.
        ("b2b_owner", False, False, False),
        ("b2b_owner", False, True, False),
    ]
    assert dbtools.query(
        warehouse.olap_dsn,
        """SELECT relowner::regrole::text,
                  has_table_privilege('b2b_reader', oid, 'SELECT'),
                  has_table_privilege('b2b_etl', oid, 'SELECT')
             FROM pg_class WHERE oid = 'dwh.deployed_later'::regclass""",
    ) == [("b2b_owner", True, False)]
