"""``teaclave-ma sim``: a simulated SGX platform for development and tests (never production)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from teaclave_ma.attestation.collateral import TCB_LEVEL_STATUSES
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.output import (
    EXIT_OK,
    add_force_flag,
    add_json_flag,
    emit,
    refuse_existing,
    say,
)
from teaclave_ma.formats.strict import expect_hex
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.identity import SgxIdentity


def register(subparsers: Any) -> None:
    sim = subparsers.add_parser("sim", help="SIMULATED SGX platform (development and tests only)")
    commands = sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND")
    init = commands.add_parser("init", help="create a simulated platform in DIR")
    init.add_argument("directory", type=Path, help="directory to create the platform in")
    init.add_argument(
        "--tcb-status",
        default="UpToDate",
        choices=sorted(TCB_LEVEL_STATUSES),
        help="the TCB status its collateral gives every quote (default UpToDate)",
    )
    init.add_argument("--days", type=int, default=30, help="how long its collateral stays valid")
    add_force_flag(init, "an existing platform (its root CA and keys change)")
    add_json_flag(init)
    init.set_defaults(func=_init)

    quote = commands.add_parser(
        "quote", help="have the simulated platform quote an enclave identity"
    )
    quote.add_argument("directory", type=Path, help="the simulated platform's directory")
    quote.add_argument("--mr-enclave", required=True, help="MRENCLAVE to quote, 64 hex digits")
    quote.add_argument("--mr-signer", required=True, help="MRSIGNER to quote, 64 hex digits")
    quote.add_argument("--isv-prod-id", type=int, default=0, help="ISV product id (default 0)")
    quote.add_argument("--isv-svn", type=int, default=0, help="ISV SVN (default 0)")
    quote.add_argument("--debug", action="store_true", help="quote a debug enclave")
    quote.add_argument("--report-data", default="00" * 64, help="64 bytes as hex")
    quote.add_argument("--out", type=Path, required=True, help="file to write the raw quote to")
    add_force_flag(quote)
    quote.set_defaults(func=_quote)


def _init(args: argparse.Namespace) -> int:
    refuse_existing(args.directory, args.force)
    say("WARNING: creating a SIMULATED SGX platform; its quotes prove nothing about hardware")
    platform = SimulatedPlatform.create(
        tcb_status=args.tcb_status, validity=dt.timedelta(days=args.days)
    )
    platform.save(args.directory)
    emit(
        args,
        {
            "directory": str(args.directory),
            "tcb_status": args.tcb_status,
            "root": str(args.directory / "root.der"),
        },
        [
            f"simulated platform in {args.directory} (TCB status {args.tcb_status})",
            f"  root CA (trust only with --root ... --trust-simulated-root): {args.directory / 'root.der'}",
            f"  collateral: {args.directory / 'collateral.json'}",
        ],
    )
    return EXIT_OK


def _quote(args: argparse.Namespace) -> int:
    platform = SimulatedPlatform.load(args.directory)
    identity = SgxIdentity(
        mr_enclave=expect_hex(args.mr_enclave, "--mr-enclave", 32),
        mr_signer=expect_hex(args.mr_signer, "--mr-signer", 32),
        isv_prod_id=args.isv_prod_id,
        isv_svn=args.isv_svn,
        debug=args.debug,
    )
    atomic_write(
        args.out,
        platform.quote(identity, expect_hex(args.report_data, "--report-data", 64)),
        overwrite=args.force,
    )
    say(f"wrote SIMULATED quote {args.out}")
    return EXIT_OK
