"""The `b2bdwh` command: one subcommand per module, each with its own arguments.

A subcommand module provides HELP (one line), add_arguments(parser) and
run(args) -> exit code. Errors meant for people are raised as CliError.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from b2bdwh.db import CliError

SUBCOMMANDS = {
    "migrate": "b2bdwh.migrate",
    "generate": "b2bdwh.generate",
    "import-csv": "b2bdwh.import_csv",
    "simulate": "b2bdwh.simulate",
    "summary": "b2bdwh.summary",
    "status": "b2bdwh.status",
    "docs": "b2bdwh.docs",
    "report": "b2bdwh.report",
    "airflow": "b2bdwh.airflow_run",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="b2bdwh",
        description="B2B sales data warehouse: source data, migrations and tools.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CliError as exc:
        print(f"b2bdwh {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"b2bdwh {args.command}: interrupted", file=sys.stderr)
        return 130
