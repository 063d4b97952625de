"""The ``cycle`` command: the weekly loop, exit 0 nobody is needed, 1 a person is needed, 2 an error."""

from __future__ import annotations

import argparse
import json

from flywheel.config import load_config
from flywheel.progress import ProgressBar
from flywheel.store.cli import open_database


def register(commands) -> None:
    """Add ``cycle``."""
    cycle = commands.add_parser(
        "cycle", help="run the weekly loop: exit 0 nobody is needed, 1 a person is needed, 2 an error"
    )
    cycle.add_argument("--db", required=True, help="path of the database")
    cycle.add_argument("--plan", required=True, metavar="FILE", help="sampling plan (.toml or .json)")
    cycle.add_argument("--inbox", metavar="DIR", help="folder of trace files; each file is ingested once")
    cycle.add_argument("--json", action="store_true", help="print the cycle report as one JSON object")
    cycle.add_argument("--actor", default="cycle", help="who runs the cycle, for the audit log")
    cycle.set_defaults(handler=_cycle)


def _cycle(args: argparse.Namespace) -> int:
    from flywheel.cycle import run_cycle
    from flywheel.sampling.plans import load_plan_file

    plan = load_plan_file(args.plan)
    bars: list[tuple[str, ProgressBar]] = []

    def progress(stage: str, done: int, total: int) -> None:
        if not bars or bars[-1][0] != stage:  # a new stage ends the previous stage's line
            if bars:
                bars[-1][1].close()
            bars.append((stage, ProgressBar(stage, unit="items")))
        bars[-1][1].update(done, total)

    report = run_cycle(open_database(args.db), plan, args.actor, args.inbox, progress, config=load_config())
    if bars:
        bars[-1][1].close()
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return report.exit_code
