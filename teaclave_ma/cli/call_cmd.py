"""``teaclave-ma call``: one JSON-RPC call to a service, from outside any enclave.

The server is verified first (quote, key binding, manifest entry of ``--expect``), with
the caller's own ``--trust`` file; only then is the request sent. ``--param k=v`` passes
the string ``v``; ``--param k:=JSON`` passes a JSON value (``n:=3``, ``tags:='["a"]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from teaclave_ma.caller import connect
from teaclave_ma.cli.output import EXIT_OK, add_json_flag, emit
from teaclave_ma.errors import InputError


def add_verification_options(parser: argparse.ArgumentParser) -> None:
    """What the caller checks the server with: shared by ``call`` and ``cert fetch``."""
    parser.add_argument("address", help="HOST:PORT of the service")
    parser.add_argument(
        "--expect", required=True, metavar="SERVICE", help="the manifest's service to expect"
    )
    parser.add_argument("--manifest", type=Path, required=True, help="the signed manifest")
    parser.add_argument(
        "--signatures", type=Path, required=True, help="directory of auditor signatures"
    )
    parser.add_argument(
        "--trust", type=Path, required=True, help="your trust file (auditors, threshold)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--collateral", type=Path, help="collateral JSON for Intel-rooted quotes")
    source.add_argument("--pccs", help="PCCS URL for Intel-rooted quotes")
    source.add_argument(
        "--simulated-platform", type=Path, help="trust this SIMULATED platform's root (testing)"
    )
    parser.add_argument(
        "--allow-status",
        action="append",
        default=[],
        metavar="STATUS",
        help="accept this TCB status besides UpToDate (repeatable)",
    )


def verification(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "service": args.expect,
        "manifest": args.manifest,
        "signatures": args.signatures,
        "trust": args.trust,
        "simulated_platform": args.simulated_platform,
        "collateral": args.collateral,
        "pccs": args.pccs,
        "allow_status": args.allow_status,
    }


def register(subparsers: Any) -> None:
    call = subparsers.add_parser("call", help="call a service's method, verifying it first")
    add_verification_options(call)
    call.add_argument("method", help="the JSON-RPC method")
    call.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V|K:=JSON",
        help="a named parameter: a string, or with := a JSON value (repeatable)",
    )
    add_json_flag(call)
    call.set_defaults(func=_call)


def parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise InputError("--param", f"expected K=V or K:=JSON, got {item!r}")
        as_json = key.endswith(":")
        key = key.removesuffix(":")
        if key in params:
            raise InputError(f"--param {key}", "given twice")
        try:
            params[key] = json.loads(value) if as_json else value
        except ValueError as exc:
            raise InputError(f"--param {key}", f"not JSON: {exc}") from None
    return params


def _call(args: argparse.Namespace) -> int:
    params = parse_params(args.param)
    with connect(args.address, **verification(args)) as client:
        peer = client.connect()
        result = client.call(args.method, **params)
    emit(
        args,
        {"service": peer.service, "measurement": peer.identity.measurement_text, "result": result},
        [json.dumps(result, indent=2, sort_keys=True)],
    )
    return EXIT_OK
