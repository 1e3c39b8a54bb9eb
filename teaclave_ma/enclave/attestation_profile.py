"""``attestation.json``: the root of trust an image was built for, measured with the image.

The build writes it into ``content/`` beside the trust file, so it is part of MRENCLAVE: an
image built for Intel's root can never be told at run time to trust a simulated one, and an
image built for one simulated platform trusts that platform's root and no other. Auditors
see it in ``measure``, ``auditor review`` and the image's description before they sign.

::

    {"root": {"name": "Intel SGX Root CA", "sha256": "44a0..."}, "simulated": null}
    {"root": {"name": "simulated SGX root (sim-platform)", "sha256": "..."}, "simulated": {"tee": "SGX"}}
"""

from __future__ import annotations

import json
import re

import attrs

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.enclave.errors import ImageFormatError

PROFILE_FILE = "attestation.json"
SIMULATED_TEES = ("SGX", "TDX")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ROOT_NAME = re.compile(r"[ -~]{1,128}")


@attrs.frozen
class AttestationProfile:
    """Which root an image trusts in every quote it checks (its own peers' and, on
    simulated images, the platform it runs on), and whether it runs on the simulation."""

    anchor: TrustAnchor
    simulated_tee: str | None = None  # "SGX" or "TDX" on a simulated image, else None

    @property
    def simulated(self) -> bool:
        return self.simulated_tee is not None

    def describe(self) -> dict[str, object]:
        return {
            "trusted_root": {"name": self.anchor.name, "sha256": self.anchor.root_sha256.hex()},
            "simulated": self.simulated,
            **({"simulated_tee": self.simulated_tee} if self.simulated_tee else {}),
        }

    def to_bytes(self) -> bytes:
        document = {
            "root": {"name": self.anchor.name, "sha256": self.anchor.root_sha256.hex()},
            "simulated": {"tee": self.simulated_tee} if self.simulated_tee else None,
        }
        return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


INTEL_PROFILE = AttestationProfile(INTEL_SGX_ROOT_CA)


def simulated_profile(root_der: bytes, platform_name: str, tee: str) -> AttestationProfile:
    if tee not in SIMULATED_TEES:
        raise ImageFormatError("simulated_tee", f"expected one of {SIMULATED_TEES}, got {tee!r}")
    anchor = TrustAnchor.for_root(root_der, f"simulated SGX root ({platform_name})")
    return AttestationProfile(anchor, tee)


def parse_profile(data: bytes, where: str = PROFILE_FILE) -> AttestationProfile:
    """The profile the build wrote; anything else in its place is refused."""
    try:
        document = json.loads(data)
        root, simulated = document["root"], document["simulated"]
        name, digest = root["name"], root["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageFormatError(where, f"not an attestation profile ({exc!r})") from None
    if set(document) != {"root", "simulated"} or set(root) != {"name", "sha256"}:
        raise ImageFormatError(where, "unexpected keys in the attestation profile")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise ImageFormatError(f"{where}: root.sha256", "expected 64 lowercase hex digits")
    if not isinstance(name, str) or not _ROOT_NAME.fullmatch(name):
        raise ImageFormatError(f"{where}: root.name", "expected printable ASCII, 1-128 characters")
    if simulated is None:
        if digest != INTEL_SGX_ROOT_CA.root_sha256.hex():
            raise ImageFormatError(
                f"{where}: root.sha256",
                f"an image not built for the simulation trusts Intel's root only "
                f"({INTEL_SGX_ROOT_CA.root_sha256.hex()}), not {digest}",
            )
        return INTEL_PROFILE
    if not isinstance(simulated, dict) or set(simulated) != {"tee"}:
        raise ImageFormatError(f"{where}: simulated", 'expected null or {"tee": "SGX"|"TDX"}')
    tee = simulated["tee"]
    if tee not in SIMULATED_TEES:
        raise ImageFormatError(f"{where}: simulated.tee", f"expected SGX or TDX, got {tee!r}")
    return AttestationProfile(TrustAnchor(name, bytes.fromhex(digest), simulated=True), tee)
