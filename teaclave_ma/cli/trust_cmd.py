"""``teaclave-ma trust``: write the build-time trust file from auditors' public keys (and,
for a kms, its secret owners' keys)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teaclave_ma.cli.output import EXIT_OK, add_force_flag, add_json_flag, emit
from teaclave_ma.crypto.auditor_key import AuditorPublicKey
from teaclave_ma.formats.strict import read_bounded
from teaclave_ma.formats.trust import (
    MAX_TRUST_BYTES,
    TrustedAuditor,
    TrustFile,
    parse_trust_file,
)
from teaclave_ma.fsutil import atomic_write


def register(subparsers: Any) -> None:
    trust = subparsers.add_parser(
        "trust", help="the build-time trust file (auditor keys, threshold)"
    )
    commands = trust.add_subparsers(dest="trust_command", required=True, metavar="COMMAND")
    new = commands.add_parser("new", help="write a trust file")
    new.add_argument(
        "--auditor",
        action="append",
        required=True,
        type=Path,
        metavar="PUBKEY_PEM",
        help="an auditor's public key (repeat); the name is the file name before .pub.pem",
    )
    new.add_argument(
        "--owner",
        action="append",
        default=[],
        type=Path,
        metavar="PUBKEY_PEM",
        help="a kms secret owner's public key (repeat; auditor keygen makes one); named like "
        "--auditor",
    )
    new.add_argument("--threshold", type=int, required=True, help="signatures needed (k of n)")
    new.add_argument("--out", type=Path, required=True, help="trust file to write")
    add_force_flag(new)
    add_json_flag(new)
    new.set_defaults(func=_new)
    show = commands.add_parser("show", help="check and summarise a trust file")
    show.add_argument("trust_file", type=Path, help="trust file to check")
    add_json_flag(show)
    show.set_defaults(func=_show)


def auditor_name_from_path(path: Path) -> str:
    name = path.name
    for suffix in (".pub.pem", ".pem"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _keys(paths: list[Path]) -> tuple[TrustedAuditor, ...]:
    return tuple(
        TrustedAuditor(
            auditor_name_from_path(path), AuditorPublicKey.from_pem(path.read_bytes(), str(path))
        )
        for path in paths
    )


def _new(args: argparse.Namespace) -> int:
    trust = TrustFile(
        threshold=args.threshold, auditors=_keys(args.auditor), owners=_keys(args.owner)
    )
    atomic_write(args.out, trust.to_bytes(), overwrite=args.force)
    return _report(args, trust, f"wrote {args.out}")


def _show(args: argparse.Namespace) -> int:
    trust = parse_trust_file(read_bounded(args.trust_file, MAX_TRUST_BYTES), str(args.trust_file))
    return _report(args, trust, f"{args.trust_file} is valid")


def _report(args: argparse.Namespace, trust: TrustFile, headline: str) -> int:
    emit(
        args,
        {
            "threshold": trust.threshold,
            "auditors": [{"name": a.name, "key_id": a.key_id} for a in trust.auditors],
            "owners": [{"name": o.name, "key_id": o.key_id} for o in trust.owners],
        },
        [
            f"{headline}: {trust.threshold} of {len(trust.auditors)} auditors must sign",
            *(f"  {a.name:<12} {a.key_id}" for a in trust.auditors),
            *(
                [f"kms secret owners: {len(trust.owners)}"]
                + [f"  {o.name:<12} {o.key_id}" for o in trust.owners]
                if trust.owners
                else []
            ),
        ],
    )
    return EXIT_OK
