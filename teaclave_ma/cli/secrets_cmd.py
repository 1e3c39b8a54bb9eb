"""``teaclave-ma seal`` and ``teaclave-ma run``: sealed code and init-time attestation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teaclave_ma.cli.output import EXIT_OK, EXIT_UNUSABLE, add_json_flag, emit, say
from teaclave_ma.enclave.image import load_image
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.runtime.provision import exec_application, provision
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.secrets.sealing import new_key, seal_source, sealing_secret_name
from teaclave_ma.secrets.store import register_secret


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
    seal.add_argument(
        "--kms-secrets",
        type=Path,
        required=True,
        help="the kms secrets file to register the key in",
    )
    add_json_flag(seal)
    seal.set_defaults(func=_seal)

    run = subparsers.add_parser(
        "run",
        help="attest, provision secrets and sealed files, then exec a command",
        usage="teaclave-ma run IMAGE --manifest M --signatures DIR --config runtime.yaml -- CMD [ARG ...]",
    )
    run.add_argument("image", type=Path, help="built enclave image directory")
    run.add_argument("--manifest", type=Path, required=True, help="the signed manifest")
    run.add_argument("--signatures", type=Path, required=True, help="its signature directory")
    run.add_argument(
        "--config", type=Path, required=True, help="runtime.yaml (names kms and provision_dir)"
    )
    run.set_defaults(func=_run)


def _seal(args: argparse.Namespace) -> int:
    service = parse_service_config(
        (args.service_dir / "service.yaml").read_bytes(), str(args.service_dir)
    )
    key = new_key()
    sealed = seal_source(args.service_dir, args.files, args.out, key)
    name = sealing_secret_name(service.name)
    register_secret(args.kms_secrets, name, key, [service.name])
    emit(
        args,
        {"sealed": sealed, "out": str(args.out), "kms_secret": name},
        [
            f"sealed {', '.join(sealed)} into {args.out}",
            f"  key registered in {args.kms_secrets} as {name!r}, released only to {service.name!r}",
            f"  build {args.out} (not {args.service_dir}) and have the auditors review that",
        ],
    )
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    command = list(args.passthrough)
    if not command:
        say("error: give the application after --, e.g. teaclave-ma run IMAGE ... -- python app.py")
        return EXIT_UNUSABLE
    image = load_image(args.image)
    runtime = parse_runtime_config(args.config.read_bytes(), args.config.parent, str(args.config))
    node = EnclaveNode(image, runtime, args.manifest, args.signatures)
    try:
        directory, environment = provision(node)
    finally:
        node.close()
    say(
        f"{image.service.name}: attested and provisioned in {directory}; starting {' '.join(command)}"
    )
    exec_application(directory, command, environment)
    return EXIT_OK  # not reached: exec replaced this process
