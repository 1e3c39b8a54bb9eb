"""``teaclave-ma doctor``: which attestation backends this machine offers, and why not the others."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teaclave_ma.attestation.backends import (
    GRAMINE_DEVICE,
    TSM_REPORTS,
    AttesterFailed,
    AttesterUnavailable,
    GramineAttester,
    TsmAttester,
)
from teaclave_ma.cli.output import EXIT_OK, add_json_flag, emit


def register(subparsers: Any) -> None:
    doctor = subparsers.add_parser("doctor", help="which attestation backends this machine offers")
    doctor.add_argument(
        "--gramine-device",
        type=Path,
        default=GRAMINE_DEVICE,
        help=f"Gramine's attestation directory (default {GRAMINE_DEVICE})",
    )
    doctor.add_argument(
        "--tsm-root",
        type=Path,
        default=TSM_REPORTS,
        help=f"configfs-tsm reports directory (default {TSM_REPORTS})",
    )
    add_json_flag(doctor)
    doctor.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    backends: list[dict[str, object]] = []
    for attester in (GramineAttester(args.gramine_device), TsmAttester(args.tsm_root)):
        try:
            attester.check()
        except AttesterUnavailable as exc:
            backends.append({"backend": attester.name, "available": False, "reason": exc.problem})
            continue
        detail = "ready"
        if isinstance(attester, TsmAttester):
            try:
                detail = f"ready (provider: {attester.provider()})"
            except AttesterFailed as exc:
                detail = f"present, but a probe failed: {exc}"
        backends.append({"backend": attester.name, "available": True, "reason": detail})
    backends.append(
        {
            "backend": "simulated",
            "available": True,
            "reason": "always, but only for an image built with --simulated-platform (measured); "
            "its quotes prove nothing about hardware",
        }
    )
    chosen = next(
        (b["backend"] for b in backends if b["available"] and b["backend"] != "simulated"), None
    )
    emit(
        args,
        {"backends": backends, "would_use": chosen},
        [
            *(
                f"  {'yes' if b['available'] else 'no ':<4} {b['backend']:<10} {b['reason']}"
                for b in backends
            ),
            f"an image allowing both real backends would use {chosen or 'nothing: no real backend here'}",
        ],
    )
    return EXIT_OK
