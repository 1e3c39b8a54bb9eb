"""``teaclave-ma quote show`` and ``quote verify``: DCAP quotes from files."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.pccs import UPDATE_TYPES, fetch_collateral_for
from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.policy import TCB_STATUSES, VerificationPolicy
from teaclave_ma.attestation.quote import Quote, parse_quote, pck_certificates
from teaclave_ma.attestation.verifier import VerifiedQuote, verify_quote
from teaclave_ma.cli.output import EXIT_OK, EXIT_REFUSED, EXIT_UNUSABLE, add_json_flag, emit
from teaclave_ma.errors import InputError, TeaclaveMAError
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
    verify.add_argument(
        "--pccs-update",
        choices=UPDATE_TYPES,
        default="standard",
        help="which TCB evaluation the PCCS serves: standard, or early (before its due date)",
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
    verify.add_argument(
        "--min-tcb-eval",
        type=int,
        default=0,
        metavar="N",
        help="refuse TCB info and QE identity of a tcbEvaluationDataNumber below N",
    )
    verify.add_argument(
        "--allow-advisory",
        action="append",
        metavar="ID",
        help="accept this advisory (repeatable); with any, every reported advisory must be one",
    )
    add_json_flag(verify)
    verify.set_defaults(func=_verify)


def _platform(quote: Quote) -> dict[str, object]:
    chain = pck_certificates(quote.certification.pck_chain_pem)
    extension = parse_pck_extension(chain[0])
    # Which root the quote chains to, so an auditor can hold it against the root an image
    # trusts (`measure`): Intel's, or which simulated platform's. Not verified here.
    root = chain[-1].public_bytes(serialization.Encoding.DER)
    root_sha256 = hashlib.sha256(root).digest()
    return {
        "fmspc": extension.fmspc.hex(),
        "pce_id": extension.pce_id.hex(),
        "qe_svn": quote.header.qe_svn,
        "pce_svn": quote.header.pce_svn,
        "root_sha256": root_sha256.hex(),
        "root_is_intel": root_sha256 == INTEL_SGX_ROOT_CA.root_sha256,
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
    return Collateral.from_json(
        fetch_collateral_for(quote, args.pccs, args.pccs_cache, now=now, update=args.pccs_update)
    )


def _policy(args: argparse.Namespace) -> VerificationPolicy:
    return VerificationPolicy(
        allow_debug=args.allow_debug,
        min_tcb_evaluation_data_number=args.min_tcb_eval,
        allowed_advisories=None if args.allow_advisory is None else args.allow_advisory,
    ).allow_status(*args.allow_status)


def _verdict(result: VerifiedQuote) -> dict[str, object]:
    return {
        "tcb_status": result.tcb_status,
        "advisory_ids": list(result.advisory_ids),
        "shortfalls": list(result.shortfalls),
        "tcb_evaluation_data_number": result.tcb_evaluation_data_number,
        "tcb_date": format_utc(result.tcb_date),
        "qe_tcb_date": format_utc(result.qe_tcb_date),
        "evidence_expires": format_utc(result.evidence_expires),
    }


def _verify(args: argparse.Namespace) -> int:
    """Every outcome is one report (one JSON object with --json): verified (exit 0),
    refused by a check (exit 1), or input that could not be used (exit 2)."""
    data: dict[str, object] = {"verified": False}
    result: VerifiedQuote | None = None
    reasons: list[str] = []
    code = EXIT_REFUSED
    try:
        now = expect_utc_time(args.at, "--at") if args.at else dt.datetime.now(dt.UTC)
        data["as_of"] = format_utc(now)
        policy = _policy(args)
        anchor = _anchor(args)
        data["anchor"] = anchor.name
        quote = parse_quote(args.quote.read_bytes())
        data.update(quote.describe())
        result = verify_quote(quote, _collateral(args, quote, now), now, policy, anchor)
        code = EXIT_OK
    except PolicyRejected as exc:
        result = exc.report if isinstance(exc.report, VerifiedQuote) else None
        reasons.append(f"{exc.check}: {exc}")
    except QuoteVerificationError as exc:
        reasons.append(f"{exc.check}: {exc}")
    except TeaclaveMAError as exc:
        reasons.append(str(exc))
        code = EXIT_UNUSABLE
    except OSError as exc:
        reasons.append(f"{exc.filename or ''}: {exc.strerror or exc}")
        code = EXIT_UNUSABLE
    verdict = _verdict(result) if result is not None else {}
    data.update(verdict, verified=code == EXIT_OK, reasons=reasons)
    headline = {EXIT_OK: "VERIFIED", EXIT_REFUSED: "REFUSED", EXIT_UNUSABLE: "UNUSABLE"}[code]
    where = "".join(
        f" {word} {data[key]}"
        for word, key in (("as of", "as_of"), ("under", "anchor"))
        if key in data
    )
    # Empty fields are left out of the lines for people (there is no "tcb_status None").
    shown = {
        key: value
        for key, value in data.items()
        if key not in ("verified", "reasons", "as_of", "anchor", "shortfalls")
        and value not in (None, [], "")
    }
    shortfalls = result.shortfalls if result is not None else ()
    emit(
        args,
        data,
        [
            f"{args.quote}: {headline}{where}",
            *(f"  reason: {reason}" for reason in reasons),
            *(f"  below UpToDate: {item}" for item in shortfalls),
            *_lines(shown),
        ],
    )
    return code
