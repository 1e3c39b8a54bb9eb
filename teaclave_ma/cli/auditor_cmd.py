"""``teaclave-ma auditor``: key generation (and ``review``, registered by the enclave commands)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teaclave_ma.cli.enclave_cmd import register_review
from teaclave_ma.cli.output import EXIT_OK, add_json_flag, emit
from teaclave_ma.crypto.auditor_key import AuditorSigningKey, write_key_pair
from teaclave_ma.errors import InputError
from teaclave_ma.formats.trust import AUDITOR_NAME


def register(subparsers: Any) -> None:
    auditor = subparsers.add_parser("auditor", help="auditor keys and reviews")
    commands = auditor.add_subparsers(dest="auditor_command", required=True, metavar="COMMAND")
    keygen = commands.add_parser("keygen", help="create an Ed25519 auditor key pair")
    keygen.add_argument("name", help="auditor name; files are NAME.key.pem and NAME.pub.pem")
    keygen.add_argument("--out", type=Path, required=True, help="directory to write the keys into")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    add_json_flag(keygen)
    keygen.set_defaults(func=_keygen)
    register_review(commands)


def _keygen(args: argparse.Namespace) -> int:
    if not AUDITOR_NAME.fullmatch(args.name):
        raise InputError(
            "name", f"{args.name!r} is not a valid auditor name ({AUDITOR_NAME.pattern})"
        )
    key = AuditorSigningKey.generate()
    private_path, public_path = write_key_pair(key, args.out, args.name, force=args.force)
    key_id = key.public_key.key_id
    emit(
        args,
        {
            "name": args.name,
            "key_id": key_id,
            "private_key": str(private_path),
            "public_key": str(public_path),
        },
        [
            f"auditor {args.name}: key id {key_id}",
            f"  private key {private_path} (mode 0600; keep it offline)",
            f"  public key  {public_path} (publish it with the key id)",
        ],
    )
    return EXIT_OK
