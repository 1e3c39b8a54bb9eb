"""``teaclave-ma build``, ``measure``, ``author keygen`` and ``auditor review``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.output import EXIT_OK, add_force_flag, add_json_flag, emit, refuse_existing
from teaclave_ma.crypto.author_key import generate_author_key, mr_signer, write_author_key
from teaclave_ma.enclave.attestation_profile import (
    INTEL_PROFILE,
    AttestationProfile,
    simulated_profile,
)
from teaclave_ma.enclave.image import (
    build_image,
    check_service_code,
    image_content,
    load_image,
    measure_source,
    review,
)
from teaclave_ma.enclave.sigstruct import SIGSTRUCT_FILE
from teaclave_ma.errors import InputError
from teaclave_ma.identity import SgxIdentity


def register(subparsers: Any) -> None:
    build = subparsers.add_parser(
        "build", help="build an enclave image with the trust file embedded"
    )
    build.add_argument(
        "service_dir", type=Path, help="service source directory (with service.yaml)"
    )
    build.add_argument(
        "--trust", type=Path, required=True, help="trust file to embed (e.g. keys/trust.yaml)"
    )
    build.add_argument(
        "--signing-key", type=Path, required=True, help="enclave author's RSA-3072 key"
    )
    build.add_argument("--out", type=Path, required=True, help="image directory to create")
    add_simulation_flags(build)
    add_force_flag(build, "an existing image directory")
    add_json_flag(build)
    build.set_defaults(func=_build)

    measure = subparsers.add_parser(
        "measure", help="print an image's (or a source tree's) measurement"
    )
    measure.add_argument(
        "target", type=Path, help="an image directory, or a service source directory"
    )
    measure.add_argument(
        "--trust", type=Path, help="for a source directory: the trust file to embed"
    )
    measure.add_argument(
        "--signing-key", type=Path, help="for a source directory: author key (public is enough)"
    )
    add_simulation_flags(measure, "for a source directory: ")
    add_json_flag(measure)
    measure.set_defaults(func=_measure)

    author = subparsers.add_parser("author", help="enclave author keys")
    commands = author.add_subparsers(dest="author_command", required=True, metavar="COMMAND")
    keygen = commands.add_parser("keygen", help="create an RSA-3072 (e=3) enclave signing key")
    keygen.add_argument(
        "--out", type=Path, required=True, help="private key file (PKCS#8 PEM, mode 0600)"
    )
    add_force_flag(keygen)
    add_json_flag(keygen)
    keygen.set_defaults(func=_author_keygen)


def add_simulation_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument(
        "--simulated-platform",
        type=Path,
        metavar="DIR",
        help=prefix + "build for this SIMULATED platform: its root (and only it) is measured "
        "into the image as the root of trust; without it the image trusts Intel's root only",
    )
    parser.add_argument(
        "--simulated-tee",
        choices=("sgx", "tdx"),
        default="sgx",
        help=prefix + "with --simulated-platform: run as an SGX enclave (default) or a TDX guest",
    )


def profile_from_args(args: argparse.Namespace) -> AttestationProfile:
    if args.simulated_platform is None:
        if args.simulated_tee != "sgx":
            raise InputError("--simulated-tee", "only goes with --simulated-platform")
        return INTEL_PROFILE
    platform = SimulatedPlatform.load(args.simulated_platform)
    return simulated_profile(
        platform.root_certificate_der, args.simulated_platform.name, args.simulated_tee.upper()
    )


def register_review(auditor_subparsers: Any) -> None:
    review_parser = auditor_subparsers.add_parser(
        "review", help="rebuild a service from source and compare with its image"
    )
    review_parser.add_argument("service_dir", type=Path, help="the service's source directory")
    review_parser.add_argument(
        "--image", type=Path, required=True, help="the built image to compare with"
    )
    review_parser.add_argument(
        "--trust", type=Path, required=True, help="the trust file the build must embed"
    )
    add_json_flag(review_parser)
    review_parser.set_defaults(func=_review)


def _profile_lines(profile: AttestationProfile) -> list[str]:
    root = profile.anchor
    lines = [f"  {'trusts root':<12} {root.name} (SHA-256 {root.root_sha256.hex()})"]
    if profile.simulated:
        lines.append(
            f"  {'SIMULATED':<12} built for a simulated platform ({profile.simulated_tee}): "
            "its quotes prove nothing about hardware"
        )
    return lines


def _identity_lines(identity: SgxIdentity, profile: AttestationProfile) -> list[str]:
    return [
        *(f"  {key:<12} {value}" for key, value in identity.describe().items()),
        *_profile_lines(profile),
    ]


def _build(args: argparse.Namespace) -> int:
    refuse_existing(args.out, args.force)
    profile = profile_from_args(args)
    check_service_code(*image_content(args.service_dir, args.trust, profile))
    image = build_image(args.service_dir, args.trust, args.signing_key, args.out, profile=profile)
    emit(
        args,
        {
            "image": str(image.root),
            "service": image.service.name,
            **image.identity.describe(),
            **profile.describe(),
        },
        [f"built {image.service.name} -> {image.root}", *_identity_lines(image.identity, profile)],
    )
    return EXIT_OK


def _measure(args: argparse.Namespace) -> int:
    if not args.target.is_dir():
        problem = "does not exist" if not args.target.exists() else "is a file"
        raise InputError(
            str(args.target), f"{problem}; give an image directory or a service source directory"
        )
    if (args.target / SIGSTRUCT_FILE).exists():
        image = load_image(args.target)
        identity, profile = image.identity, image.profile
    elif args.trust is None or args.signing_key is None:
        raise InputError("measure", "a source directory needs --trust and --signing-key")
    else:
        profile = profile_from_args(args)
        identity = measure_source(args.target, args.trust, args.signing_key, profile)
    emit(
        args,
        {**identity.describe(), **profile.describe()},
        [f"{args.target}:", *_identity_lines(identity, profile)],
    )
    return EXIT_OK


def _author_keygen(args: argparse.Namespace) -> int:
    key = generate_author_key()
    write_author_key(key, args.out, force=args.force)
    signer = mr_signer(key.public_key()).hex()
    emit(
        args,
        {"key": str(args.out), "mr_signer": signer},
        [f"wrote {args.out} (mode 0600)", f"  mr_signer {signer}"],
    )
    return EXIT_OK


def _review(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    identity = review(args.service_dir, args.trust, image)
    entry = {
        "service": image.service.name,
        "mr_enclave": identity.mr_enclave.hex(),
        "mr_signer": identity.mr_signer.hex(),
        "isv_prod_id": identity.isv_prod_id,
        "min_isv_svn": identity.isv_svn,
        "debug": identity.debug,
    }
    emit(
        args,
        {"reviewed": True, "entry": entry, **image.profile.describe()},
        [
            f"{image.service.name}: the image is exactly what {args.service_dir} builds to",
            *_profile_lines(image.profile),
            "add it to the manifest with:",
            f"  teaclave-ma manifest add MANIFEST --from-image {args.image}",
        ],
    )
    return EXIT_OK
