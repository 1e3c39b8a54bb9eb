"""Trust anchors: which root CA a verifier accepts, pinned by the SHA-256 of its DER.

The root certificate itself travels in every quote's PCK chain and in the collateral's
issuer chains; a verifier trusts it only if it hashes to the anchor. Intel's root is pinned
here by fingerprint, so no certificate has to be shipped or loaded from disk.
"""

from __future__ import annotations

import hashlib

import attrs


@attrs.frozen
class TrustAnchor:
    name: str
    root_sha256: bytes
    simulated: bool

    @classmethod
    def for_root(cls, certificate_der: bytes, name: str, *, simulated: bool = True) -> TrustAnchor:
        return cls(name, hashlib.sha256(certificate_der).digest(), simulated)


INTEL_SGX_ROOT_CA = TrustAnchor(
    "Intel SGX Root CA",
    bytes.fromhex("44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"),
    simulated=False,
)

# Every CA of the simulated platform carries this marker in its subject CN, so that a
# production verifier can say precisely why it refuses a simulated quote.
SIMULATED_MARKER = "SIMULATED"
