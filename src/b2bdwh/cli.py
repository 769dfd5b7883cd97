"""The `b2bdwh` command: one subcommand per module, each with its own arguments.

A subcommand module provides HELP (one line), add_arguments(parser) and
run(args) -> exit code. Errors meant for people are raised as CliError.

Exit codes: 0 done, 1 failed (a CliError), 2 a usage error (argparse's own; `b2bdwh`
with no command prints the command list and exits 2 too, as argparse does for a missing
required argument), 130 interrupted. A subcommand may give its own meaning to 2:
`b2bdwh status` exits 2 when the warehouse is unhealthy.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
USAGE_ERROR = 2


def _exit_on_usage_error(parser: argparse.ArgumentParser, code: int) -> None:
    """Make `parser` exit with `code` on a usage error instead of argparse's 2."""

    def error(message: str) -> None:
        parser.print_usage(sys.stderr)
        parser.exit(code, f"{parser.prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="b2bdwh",
        description="B2B sales data warehouse: source data, migrations and tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, parser=sub)
        if hasattr(sub, "usage_exit_code"):  # e.g. status: 2 means unhealthy there
            _exit_on_usage_error(sub, sub.usage_exit_code)
    return parser


def quiet_broken_pipe() -> int:
    """The reader went away (`b2bdwh docs | head -1`): end quietly, as cat does. stdout is
    pointed at /dev/null so that Python's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the subcommand's parser, which knows its own exit code
        (getattr(args, "parser", None) or parser).error(
            f"unrecognized arguments: {' '.join(extras)}"
        )
    if args.command is None:
        # No command: the command list, as --help prints it, on stderr; a usage error.
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        code = int(args.run(args) or 0)
    except BrokenPipeError:  # cut off mid-way: the command did not finish
        return quiet_broken_pipe()
    except CliError as exc:
        print(f"b2bdwh {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"b2bdwh {args.command}: interrupted", file=sys.stderr)
        return 130
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # finished; only the reader left early: its result stands
        quiet_broken_pipe()
    return code
