"""Command line: ``python -m flywheel COMMAND``; errors are one line on stderr and exit code 2.

Each station adds its own commands (its ``cli.register``); this module only builds the root parser and
runs the chosen command's handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from flywheel import cycle_cli
from flywheel.demo import cli as demo_cli
from flywheel.drift import cli as drift_cli
from flywheel.errors import FlywheelError
from flywheel.evals import cli as evals_cli
from flywheel.ingest import cli as ingest_cli
from flywheel.online import cli as online_cli
from flywheel.privacy import cli as privacy_cli
from flywheel.sampling import cli as sampling_cli
from flywheel.scrub import cli as scrub_cli
from flywheel.store.cli import created, drop_unused
from flywheel.vectors import cli as vectors_cli

# In loop order; ``--help`` lists the commands in this order.
STATIONS = (
    ingest_cli,
    sampling_cli,
    scrub_cli,
    vectors_cli,
    evals_cli,
    drift_cli,
    online_cli,
    privacy_cli,
    demo_cli,
    cycle_cli,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = build_parser().parse_args(argv)
    created.clear()
    try:
        code = args.handler(args)
    except FlywheelError as error:
        drop_unused(created)
        print(f"flywheel {args.command}: {error}", file=sys.stderr)
        return 2
    for path in created:
        print(f"flywheel {args.command}: created a new database {path!r}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every station's commands."""
    parser = _Parser(prog="flywheel", description="Keep an LLM product's eval set alive.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for station in STATIONS:
        station.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
