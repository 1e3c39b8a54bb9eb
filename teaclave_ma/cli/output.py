"""How every command reports: readable lines for people, one JSON object with ``--json``.

Exit codes are shared by all commands: 0 success, 1 a security check refused the input,
2 the input was unusable (missing file, malformed data, bad arguments).
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `teaclave-ma --json CMD` (the top-level flag) must survive CMD's parser.
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object for machines",
    )


def add_force_flag(parser: argparse.ArgumentParser, what: str = "an existing file") -> None:
    parser.add_argument("--force", action="store_true", help=f"replace {what}")


def refuse_existing(path: Path, force: bool) -> None:
    """The one overwrite rule of every command that writes: an existing output is replaced
    only with ``--force``. (Files written with ``atomic_write(overwrite=force)`` get the
    same refusal, race-free; this is for outputs written otherwise, such as directories.)"""
    if force or not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        return  # an empty directory holds nothing to lose
    raise FileExistsError(errno.EEXIST, "exists (use --force to replace it)", str(path))


def emit(args: argparse.Namespace, data: Mapping[str, Any], lines: Iterable[str]) -> None:
    """Print ``data`` as JSON under ``--json``, otherwise the human ``lines``."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    else:
        for line in lines:
            sys.stdout.write(line + "\n")
    sys.stdout.flush()


def say(line: str) -> None:
    """A progress or status line for people; goes to stderr so ``--json`` stdout stays clean."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
