"""``teaclave-ma cert inspect``: what an RA-TLS certificate carries; ``cert fetch``: a
running service's certificate, written only once it is verified (to pin it in an ordinary
TLS client: it is self-signed, with the service name as its CN)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teaclave_ma.caller import fetch_certificate
from teaclave_ma.cli.call_cmd import add_verification_options, verification
from teaclave_ma.cli.output import EXIT_OK, EXIT_REFUSED, add_force_flag, add_json_flag, emit
from teaclave_ma.errors import VerificationError
from teaclave_ma.formats.strict import format_utc
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    TCG_EVIDENCE_OID,
    bound_quote,
    extract_evidence,
)


def register(subparsers: Any) -> None:
    cert = subparsers.add_parser("cert", help="RA-TLS certificates")
    commands = cert.add_subparsers(dest="cert_command", required=True, metavar="COMMAND")
    inspect = commands.add_parser("inspect", help="show the evidence in a certificate (PEM or DER)")
    inspect.add_argument("certificate", type=Path, help="certificate file, PEM or DER")
    add_json_flag(inspect)
    inspect.set_defaults(func=_inspect)
    fetch = commands.add_parser(
        "fetch", help="verify a running service and write its certificate (PEM)"
    )
    add_verification_options(fetch)
    fetch.add_argument("--out", type=Path, required=True, help="where to write the PEM")
    add_force_flag(fetch)
    add_json_flag(fetch)
    fetch.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    verified = verification(args)
    peer, pem = fetch_certificate(args.address, **verified)  # raises before anything is written
    atomic_write(args.out, pem, overwrite=args.force)
    emit(
        args,
        {
            "service": peer.service,
            "measurement": peer.identity.measurement_text,
            "certificate_sha256": peer.certificate_sha256.hex(),
            "not_after": format_utc(peer.certificate_not_after),
            "out": str(args.out),
        },
        [
            f"{args.address} is the manifest's {peer.service} ({peer.identity.measurement_text})",
            f"certificate written to {args.out} (valid until "
            f"{format_utc(peer.certificate_not_after)}; fetch again after it rotates)",
        ],
    )
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    evidence = extract_evidence(args.certificate.read_bytes())
    extensions = []
    if evidence.legacy_quote is not None:
        extensions.append(
            {
                "name": "sgx-quote (Gramine legacy)",
                "oid": LEGACY_QUOTE_OID,
                "spelled": evidence.legacy_oid,
            }
        )
    if evidence.tcg_quote is not None:
        extensions.append(
            {"name": "tcg-tagged-evidence", "oid": TCG_EVIDENCE_OID, "spelled": TCG_EVIDENCE_OID}
        )
    binding_error = None
    identity: dict[str, object] = {}
    try:
        identity = bound_quote(evidence).describe()
    except VerificationError as exc:
        binding_error = str(exc)
    data = {
        "sha256": evidence.sha256.hex(),
        "not_before": format_utc(evidence.not_before),
        "not_after": format_utc(evidence.not_after),
        "evidence_extensions": extensions,
        "binding": "ok" if binding_error is None else binding_error,
        **identity,
    }
    emit(
        args,
        data,
        [
            f"{args.certificate}: valid {data['not_before']} .. {data['not_after']}",
            *(f"  evidence: {e['name']} ({e['spelled']})" for e in extensions),
            f"  key binding: {data['binding']}",
            *(f"  {key:<14} {value}" for key, value in identity.items()),
            "  (the quote itself is not verified here; `quote verify` does that)",
        ],
    )
    return EXIT_OK if binding_error is None else EXIT_REFUSED
