"""The ``tailmark`` command: one subcommand per job.

Each subcommand lives beside the code it drives, in a module with ``register(subparsers)`` that adds
its parser and sets ``handler`` (a function of the parsed namespace returning an exit code). Those
modules import their heavy dependencies inside the handler, so ``tailmark --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tailmark import __version__

# subcommand modules, in the order `--help` lists them
COMMAND_MODULES = (
    "tailmark.client.cli",
    "tailmark.server.cli",
    "tailmark.traces.cli",
    "tailmark.training.cli",
    "tailmark.models.cli",
)


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailmark", description="Open-loop inference-serving benchmark.")
    parser.add_argument("--version", action="version", version=f"tailmark {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # subcommand not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except UsageError as exc:
        print(f"tailmark {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tailmark {args.command}: interrupted", file=sys.stderr)
        return 130
