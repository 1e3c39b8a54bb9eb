"""``teaclave-ma quote show`` and ``quote verify``: DCAP quotes from files."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path
from typing import Any

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.pccs import fetch_collateral
from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.policy import TCB_STATUSES, VerificationPolicy
from teaclave_ma.attestation.quote import Quote, parse_quote, pck_certificates
from teaclave_ma.attestation.verifier import VerifiedQuote, verify_quote
from teaclave_ma.cli.output import EXIT_OK, EXIT_REFUSED, add_json_flag, emit
from teaclave_ma.errors import InputError
from teaclave_ma.formats.strict import expect_utc_time, format_utc

log = logging.getLogger(__name__)
DEFAULT_PCCS_CACHE = Path.home() / ".cache" / "teaclave-ma" / "pccs"


def register(subparsers: Any) -> None:
    quote = subparsers.add_parser("quote", help="inspect and verify DCAP quotes")
    commands = quote.add_subparsers(dest="quote_command", required=True, metavar="COMMAND")
    show = commands.add_parser("show", help="print what a quote says (nothing is verified)")
    show.add_argument("quote", type=Path, help="raw binary quote")
    add_json_flag(show)
    show.set_defaults(func=_show)

    verify = commands.add_parser("verify", help="verify a quote with collateral at a given time")
    verify.add_argument("quote", type=Path, help="raw binary quote")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--collateral", type=Path, help="collateral JSON (QuoteCollateralV3 layout)"
    )
    source.add_argument(
        "--pccs", metavar="URL", help="fetch collateral from a PCCS (.../sgx/certification/v4)"
    )
    verify.add_argument(
        "--pccs-cache", type=Path, default=DEFAULT_PCCS_CACHE, help="collateral cache directory"
    )
    verify.add_argument("--root", type=Path, help="trust this root CA (DER) instead of Intel's")
    verify.add_argument(
        "--trust-simulated-root",
        action="store_true",
        help="required with --root: accept a root that is not Intel's (INSECURE outside tests)",
    )
    verify.add_argument("--at", help="verify as of this UTC time (ISO 8601); default now")
    verify.add_argument(
        "--allow-status",
        action="append",
        default=[],
        choices=sorted(TCB_STATUSES - {"Revoked"}),
        metavar="STATUS",
        help="also accept this TCB status (repeat); one of: "
        + ", ".join(sorted(TCB_STATUSES - {"Revoked"})),
    )
    verify.add_argument(
        "--allow-debug", action="store_true", help="accept debug enclaves (INSECURE)"
    )
    add_json_flag(verify)
    verify.set_defaults(func=_verify)


def _platform(quote: Quote) -> dict[str, object]:
    extension = parse_pck_extension(pck_certificates(quote.certification.pck_chain_pem)[0])
    return {
        "fmspc": extension.fmspc.hex(),
        "pce_id": extension.pce_id.hex(),
        "qe_svn": quote.header.qe_svn,
        "pce_svn": quote.header.pce_svn,
    }


def _lines(data: dict[str, object]) -> list[str]:
    return [f"  {key:<20} {value}" for key, value in data.items()]


def _show(args: argparse.Namespace) -> int:
    quote = parse_quote(args.quote.read_bytes())
    data = {**quote.describe(), **_platform(quote)}
    emit(
        args,
        data,
        [f"{args.quote}: {quote.tee} quote v{quote.header.version} (not verified)", *_lines(data)],
    )
    return EXIT_OK


def _anchor(args: argparse.Namespace) -> TrustAnchor:
    if args.root is None:
        return INTEL_SGX_ROOT_CA
    anchor = TrustAnchor.for_root(args.root.read_bytes(), f"root from {args.root}", simulated=True)
    if anchor.root_sha256 == INTEL_SGX_ROOT_CA.root_sha256:
        return INTEL_SGX_ROOT_CA
    if not args.trust_simulated_root:
        raise InputError(
            "--root", "is not Intel's SGX root CA; add --trust-simulated-root to trust it anyway"
        )
    log.warning(
        "trusting root %s, which is NOT Intel's: verification proves nothing about real hardware",
        args.root,
    )
    return anchor


def _collateral(args: argparse.Namespace, quote: Quote, now: dt.datetime) -> Collateral:
    if args.collateral is not None:
        return Collateral.from_json(args.collateral.read_bytes())
    pck = pck_certificates(quote.certification.pck_chain_pem)
    extension = parse_pck_extension(pck[0])
    ca = "processor" if "Processor" in pck[1].subject.rfc4514_string() else "platform"
    return Collateral.from_json(
        fetch_collateral(args.pccs, extension.fmspc, ca, args.pccs_cache, now=now)
    )


def _verify(args: argparse.Namespace) -> int:
    now = expect_utc_time(args.at, "--at") if args.at else dt.datetime.now(dt.UTC)
    quote = parse_quote(args.quote.read_bytes())
    policy = VerificationPolicy(allow_debug=args.allow_debug).allow_status(*args.allow_status)
    collateral = _collateral(args, quote, now)
    anchor = _anchor(args)
    result: VerifiedQuote | None = None
    reasons: list[str] = []
    try:
        result = verify_quote(quote, collateral, now, policy, anchor)
    except PolicyRejected as exc:
        result = exc.report if isinstance(exc.report, VerifiedQuote) else None
        reasons.append(str(exc))
    except QuoteVerificationError as exc:
        reasons.append(f"{exc.check}: {exc}")
    verified = not reasons
    data: dict[str, object] = {
        "verified": verified,
        "tcb_status": result.tcb_status if result else None,
        "advisory_ids": list(result.advisory_ids) if result else [],
        "evidence_expires": format_utc(result.evidence_expires) if result else None,
        "reasons": reasons,
        "anchor": anchor.name,
        **quote.describe(),
    }
    headline = "VERIFIED" if verified else "REFUSED"
    emit(
        args,
        data,
        [
            f"{args.quote}: {headline} as of {format_utc(now)} under {anchor.name}",
            *(f"  reason: {reason}" for reason in reasons),
            *_lines({k: v for k, v in data.items() if k not in ("verified", "reasons")}),
        ],
    )
    return EXIT_OK if verified else EXIT_REFUSED
