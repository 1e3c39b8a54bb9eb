"""Entry point of the ``teaclave-ma`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from teaclave_ma import __version__
from teaclave_ma.cli.log_setup import LOG_FORMATS, configure_logging
from teaclave_ma.cli.output import EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_UNUSABLE, say
from teaclave_ma.errors import TeaclaveMAError, VerificationError

# Each module defines ``register(subparsers)``; the parser it adds sets ``func``.
COMMAND_MODULES = (
    "teaclave_ma.cli.auditor_cmd",
    "teaclave_ma.cli.trust_cmd",
    "teaclave_ma.cli.manifest_cmd",
    "teaclave_ma.cli.enclave_cmd",
    "teaclave_ma.cli.quote_cmd",
    "teaclave_ma.cli.sim_cmd",
    "teaclave_ma.cli.doctor_cmd",
    "teaclave_ma.cli.cert_cmd",
    "teaclave_ma.cli.serve_cmd",
    "teaclave_ma.cli.call_cmd",
    "teaclave_ma.cli.secrets_cmd",
    "teaclave_ma.cli.demo_cmd",
    "teaclave_ma.cli.gramine_cmd",
)


class UsageError(Exception):
    """Arguments argparse refused; ``usage`` is the usage line of the (sub)command."""

    def __init__(self, usage: str, prog: str, message: str) -> None:
        self.usage = usage
        self.prog = prog
        self.message = message
        super().__init__(message)


class Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so that ``main`` reports usage errors like any other
    error (and as JSON under ``--json``). Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.format_usage(), self.prog, message)


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Below the top the defaults are SUPPRESS, so an option given before the subcommand is
    # not reset by the subcommand's parser: `-v demo` and `demo -v` mean the same.
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="log debug details to stderr",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text" if top else argparse.SUPPRESS,
        help="log lines as timestamped text (default) or one JSON object per line",
    )


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield child
                yield from _subparsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="teaclave-ma",
        description="Mutual remote attestation with auditor signatures between confidential services.",
    )
    parser.add_argument("--version", action="version", version=f"teaclave-ma {__version__}")
    _global_options(parser, top=True)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object for machines (commands that have JSON output)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for child in _subparsers(parser):
        _global_options(child, top=False)
        child.set_defaults(json_output="--json" in child._option_string_actions)
    return parser


def _usage_error(error: UsageError, as_json: bool) -> int:
    sys.stderr.write(f"{error.usage}{error.prog}: error: {error.message}\n")
    if as_json:
        document = {"error": "usage", "command": error.prog, "message": error.message}
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return EXIT_UNUSABLE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is a command to run (`teaclave-ma run ... -- CMD`);
    # argparse's subparsers cannot carry that through on their own.
    passthrough: list[str] = []
    if "--" in arguments:
        split = arguments.index("--")
        arguments, passthrough = arguments[:split], arguments[split + 1 :]
    try:
        args = parser.parse_args(arguments)
        if args.json and not args.json_output:
            parser.error(f"{args.command} has no --json output")
    except UsageError as exc:
        return _usage_error(exc, "--json" in arguments)
    args.passthrough = passthrough
    configure_logging(args.verbose, args.log_format)
    try:
        code: int = args.func(args)
    except VerificationError as exc:
        say(f"refused: {exc}")
        return EXIT_REFUSED
    except TeaclaveMAError as exc:
        say(f"error: {exc}")
        return EXIT_UNUSABLE
    except OSError as exc:
        say(f"error: {exc.filename}: {exc.strerror}" if exc.filename else f"error: {exc}")
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
