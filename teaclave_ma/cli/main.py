"""Entry point of the ``teaclave-ma`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from teaclave_ma.cli.output import EXIT_REFUSED, EXIT_UNUSABLE, say
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
    "teaclave_ma.cli.secrets_cmd",
    "teaclave_ma.cli.demo_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teaclave-ma",
        description="Mutual remote attestation with auditor signatures between confidential services.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is a command to run (`teaclave-ma run ... -- CMD`);
    # argparse's subparsers cannot carry that through on their own.
    passthrough: list[str] = []
    if "--" in arguments:
        split = arguments.index("--")
        arguments, passthrough = arguments[:split], arguments[split + 1 :]
    args = parser.parse_args(arguments)
    args.passthrough = passthrough
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except VerificationError as exc:
        say(f"refused: {exc}")
        return EXIT_REFUSED
    except TeaclaveMAError as exc:
        say(f"error: {exc}")
        return EXIT_UNUSABLE
    except OSError as exc:
        say(f"error: {exc.filename or ''}: {exc.strerror or exc}")
        return EXIT_UNUSABLE
    return code


if __name__ == "__main__":
    sys.exit(main())
