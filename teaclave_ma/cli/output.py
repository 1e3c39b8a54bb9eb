"""How every command reports: readable lines for people, one JSON object with ``--json``.

Exit codes are shared by all commands: 0 success, 1 a security check refused the input,
2 the input was unusable (missing file, malformed data, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNUSABLE = 2


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object for machines")


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
