"""``teaclave-ma seal`` and ``teaclave-ma run``: sealed code and init-time attestation."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from teaclave_ma.cli.output import EXIT_OK, add_json_flag, emit
from teaclave_ma.cli.serve_cmd import add_initialize_state_flag
from teaclave_ma.enclave.image import SERVICE_CONFIG, load_image
from teaclave_ma.errors import InputError
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.runtime.provision import run_job
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


def _seal(args: argparse.Namespace) -> int:
    key = new_key()
    sealed = seal_source(args.service_dir, args.files, args.out, key)
    # Read from the copy, written from the walked bytes: never through a link of the source.
    service = parse_service_config(
        (args.out / SERVICE_CONFIG).read_bytes(), str(args.out / SERVICE_CONFIG)
    )
    name = sealing_secret_name(service.name)
    register_secret(args.kms_secrets, name, key)
    emit(
        args,
        {"sealed": sealed, "out": str(args.out), "kms_secret": name},
        [
            f"sealed {', '.join(sealed)} into {args.out}",
            f"  key registered in {args.kms_secrets} as {name!r}",
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
