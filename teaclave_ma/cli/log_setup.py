"""Logging for the ``teaclave-ma`` command: timestamped lines, or one JSON object per line."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TextIO

LOG_FORMATS = ("text", "json")
_HANDLER_NAME = "teaclave-ma-cli"


def _utc_time(record: logging.LogRecord) -> str:
    # UTC with milliseconds: lines from several services (and hosts) sort into one story.
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_time(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; a traceback goes into ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(verbose: bool, log_format: str, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr) in ``log_format``; DEBUG with ``verbose``, else INFO.

    A program that embeds the CLI (or pytest) and has configured logging itself keeps its
    handlers; repeated calls replace only the handler installed here."""
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if handler.get_name() == _HANDLER_NAME]
    if root.handlers and not ours:
        return
    for handler in ours:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
