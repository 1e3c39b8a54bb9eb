"""``teaclave-ma demo``: the whole story on one machine, on the simulated platform."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import attrs

from teaclave_ma.cli.output import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, add_json_flag, emit, say
from teaclave_ma.demo.processes import ChildProcesses, Interrupted
from teaclave_ma.demo.scenario import SERVICES, Demo
from teaclave_ma.errors import InputError

# Shipped in the package (in a checkout, a link to services/), so an installed demo runs.
DEFAULT_SERVICES = Path(__file__).resolve().parents[1] / "demo" / "services"


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="auditors, images, signed manifest, services attesting each other, and refusals",
    )
    demo.add_argument(
        "--workdir", type=Path, default=Path("demo-run"), help="scratch directory (recreated)"
    )
    demo.add_argument(
        "--services",
        type=Path,
        default=DEFAULT_SERVICES,
        help="directory of the example services' sources (default: the ones shipped)",
    )
    add_json_flag(demo)
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if not args.verbose:
        # The account below tells the story (and says once, loudly, that the platform is
        # simulated); the library's repeated warnings would drown it. -v shows them all.
        logging.getLogger("teaclave_ma").setLevel(logging.ERROR)
    missing = [name for name in SERVICES if not (args.services / name / "service.yaml").is_file()]
    if missing:
        raise InputError(
            "--services",
            f"{args.services} lacks the example services {', '.join(missing)} "
            "(give the services/ directory of a checkout)",
        )
    progress = (lambda _line: None) if args.json else say
    children = ChildProcesses()
    children.handle_signals()
    try:
        outcomes = Demo(args.workdir.resolve(), args.services.resolve(), progress, children).run()
    except Interrupted as stop:
        # Demo.run has stopped every child on its way out; one line, no traceback.
        say(f"demo interrupted by {stop}: every service it started has been stopped")
        emit(args, {"ok": False, "interrupted": str(stop)}, [])
        return EXIT_INTERRUPTED
    held = all(outcome.held for outcome in outcomes)
    emit(
        args,
        {"ok": held, "workdir": str(args.workdir), "outcomes": [attrs.asdict(o) for o in outcomes]},
        [
            "",
            f"{sum(o.held for o in outcomes)} of {len(outcomes)} expectations held"
            + ("" if held else " -- see FAILED lines above"),
            f"service logs: {args.workdir / 'logs'}",
        ],
    )
    return EXIT_OK if held else EXIT_REFUSED
