"""``teaclave-ma seal``, ``teaclave-ma run`` and ``teaclave-ma secrets``: sealed code,
init-time attestation, and the owners' channel to the kms."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from teaclave_ma.caller import outside_verifier
from teaclave_ma.cli.output import EXIT_OK, add_json_flag, emit
from teaclave_ma.cli.serve_cmd import add_initialize_state_flag
from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.enclave.image import SERVICE_CONFIG, load_image
from teaclave_ma.errors import InputError
from teaclave_ma.formats.runtime_config import parse_address, parse_runtime_config
from teaclave_ma.formats.service_config import SERVICE_NAME, parse_service_config
from teaclave_ma.runtime.provision import run_job
from teaclave_ma.secrets.client import KmsOwnerClient
from teaclave_ma.secrets.direct import provision_secret
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.secrets.sealing import new_key, seal_source, sealing_secret_name
from teaclave_ma.transport.peer_verify import PeerVerifier


def register(subparsers: Any) -> None:
    seal = subparsers.add_parser(
        "seal", help="seal files of a service and register the key with the kms"
    )
    seal.add_argument("service_dir", type=Path, help="service source directory to seal files of")
    seal.add_argument(
        "--file", action="append", required=True, dest="files", help="path to seal (repeat)"
    )
    seal.add_argument(
        "--out", type=Path, required=True, help="new directory for the sealed copy (build this)"
    )
    add_owner_arguments(seal)
    add_json_flag(seal)
    seal.set_defaults(func=_seal)

    run = subparsers.add_parser(
        "run",
        help="attest, provision secrets and sealed files, then run the image's program",
        description="The program, its arguments and its environment come from run: in the "
        "image's measured service.yaml; the job's private directory is removed when it ends.",
        usage="teaclave-ma run IMAGE --manifest M --signatures DIR --config runtime.yaml "
        "[--initialize-state]",
    )
    run.add_argument("image", type=Path, help="built enclave image directory")
    run.add_argument("--manifest", type=Path, required=True, help="the signed manifest")
    run.add_argument("--signatures", type=Path, required=True, help="its signature directory")
    run.add_argument(
        "--config",
        type=Path,
        required=True,
        help="runtime.yaml (names the kms; provision_dir: where the job's directory is made)",
    )
    add_initialize_state_flag(run)
    run.set_defaults(func=_run)

    group = subparsers.add_parser(
        "secrets", help="put, rotate, delete and list the kms's secrets (as an owner)"
    )
    commands = group.add_subparsers(dest="secrets_command", required=True)
    for operation, text in (("put", "store a new secret"), ("rotate", "replace a secret's value")):
        command = commands.add_parser(operation, help=text)
        command.add_argument("name", help="the secret's name")
        command.add_argument("--from-file", type=Path, required=True, help="the value's file")
        add_owner_arguments(command)
        add_json_flag(command)
        command.set_defaults(func=_change, operation=operation)
    delete = commands.add_parser("delete", help="remove a secret (its version is kept)")
    delete.add_argument("name", help="the secret's name")
    add_owner_arguments(delete)
    add_json_flag(delete)
    delete.set_defaults(func=_change, operation="delete", from_file=None)
    listing = commands.add_parser("list", help="the kms's secrets: names and versions only")
    add_owner_arguments(listing)
    add_json_flag(listing)
    listing.set_defaults(func=_list)
    direct = commands.add_parser(
        "provision", help="attest a service and send it a secret directly (no kms)"
    )
    direct.add_argument("target", help="SERVICE@HOST:PORT: the service and where it listens")
    direct.add_argument("name", help="the secret's name")
    direct.add_argument("--from-file", type=Path, required=True, help="the value's file")
    add_owner_arguments(direct, kms=False)
    add_json_flag(direct)
    direct.set_defaults(func=_provision)


def add_owner_arguments(parser: argparse.ArgumentParser, *, kms: bool = True) -> None:
    if kms:
        parser.add_argument("--kms", required=True, help="the kms's HOST:PORT")
    parser.add_argument(
        "--owner-key", type=Path, required=True, help="your owner key (Ed25519 PEM)"
    )
    parser.add_argument("--manifest", type=Path, required=True, help="the signed manifest")
    parser.add_argument("--signatures", type=Path, required=True, help="its signature directory")
    parser.add_argument(
        "--trust", type=Path, required=True, help="the trust file measured into the kms"
    )
    root = parser.add_mutually_exclusive_group(required=True)
    root.add_argument(
        "--collateral", type=Path, help="collateral JSON for the kms's quote (Intel's root)"
    )
    root.add_argument(
        "--simulated-platform",
        type=Path,
        help="trust this SIMULATED platform's root instead (development only)",
    )


def owner_client(args: argparse.Namespace) -> KmsOwnerClient:
    """The owner's connection, verifying the kms against the manifest before any byte."""
    key = AuditorSigningKey.load(args.owner_key)
    return KmsOwnerClient(parse_address(args.kms, "--kms"), key, owner_verifier(args))


def owner_verifier(args: argparse.Namespace) -> PeerVerifier:
    """Checks a service against the signed manifest, from outside any enclave."""
    return outside_verifier(
        manifest=args.manifest,
        signatures=args.signatures,
        trust=args.trust,
        simulated_platform=args.simulated_platform,
        collateral=args.collateral,
    )


def _provision(args: argparse.Namespace) -> int:
    service, at, where = args.target.partition("@")
    if not at or not SERVICE_NAME.fullmatch(service):
        raise InputError("target", f"expected SERVICE@HOST:PORT, got {args.target!r}")
    address = parse_address(where, "target")
    provision_secret(
        address,
        service,
        AuditorSigningKey.load(args.owner_key),
        owner_verifier(args),
        name=args.name,
        value=SecretValue(args.from_file.read_bytes()),
    )
    emit(
        args,
        {"service": service, "secret": args.name},
        [f"attested {service} at {where} and sent it secret {args.name!r}"],
    )
    return EXIT_OK


def _change(args: argparse.Namespace) -> int:
    value = None if args.from_file is None else SecretValue(args.from_file.read_bytes())
    with owner_client(args) as owner:
        version = owner.change(args.operation, args.name, value)
    done = {"put": "stored", "rotate": "rotated", "delete": "deleted"}[args.operation]
    emit(
        args,
        {"secret": args.name, "operation": args.operation, "version": version},
        [f"{done} secret {args.name!r} (version {version}) in the kms at {args.kms}"],
    )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    with owner_client(args) as owner:
        store, versions = owner.listing()
    emit(
        args,
        {"store": store, "secrets": versions},
        [f"kms store {store[:16]}...: {len(versions)} secret(s)"]
        + [f"  {name}  version {version}" for name, version in versions.items()],
    )
    return EXIT_OK


def _seal(args: argparse.Namespace) -> int:
    key = new_key()
    # What seal refuses (links, devices, a bad service.yaml) is refused before the kms is
    # contacted; the copy is removed again if the kms does not take its key.
    sealed = seal_source(args.service_dir, args.files, args.out, key)
    try:
        # Read from the copy, written from the walked bytes: never through a link.
        service = parse_service_config(
            (args.out / SERVICE_CONFIG).read_bytes(), str(args.out / SERVICE_CONFIG)
        )
        name = sealing_secret_name(service.name)
        with owner_client(args) as owner:
            _, held = owner.listing()
            version = owner.change("rotate" if name in held else "put", name, key)
    except BaseException:
        shutil.rmtree(args.out)
        raise
    emit(
        args,
        {"sealed": sealed, "out": str(args.out), "kms_secret": name, "version": version},
        [
            f"sealed {', '.join(sealed)} into {args.out}",
            f"  key put into the attested kms at {args.kms} as {name!r}",
            f"  the manifest must release it to {service.name!r} only: "
            f"secrets: {{{name}: {{allow: [{service.name}]}}}}",
            f"  build {args.out} (not {args.service_dir}) and have the auditors review that",
        ],
    )
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.passthrough:
        raise InputError(
            "--",
            "teaclave-ma run takes no command: the program and its arguments come from "
            "run.command in the image's measured service.yaml "
            f"(refused: {' '.join(args.passthrough)})",
        )
    image = load_image(args.image)
    runtime = parse_runtime_config(args.config.read_bytes(), args.config.parent, str(args.config))
    return run_job(
        image,
        runtime,
        args.manifest,
        args.signatures,
        os.environ,
        initialize_state=args.initialize_state,
    )
