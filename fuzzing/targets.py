"""Fuzz targets: each takes one input and returns, or raises the library's own error
(``TeaclaveMAError``, an expected refusal). Any other exception is a finding.

Seeds are the real samples in ../shared/data and inputs made by a simulated platform, so
that the fuzzer starts from valid evidence and reaches the deep paths (signature data,
certification data, PCK chain, TCB evaluation; certificate extensions, CBOR, key binding).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import enum
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import Quote, parse_quote, pck_certificates
from teaclave_ma.attestation.sim.platform import STATE_FILE, SimulatedPlatform
from teaclave_ma.attestation.verifier import verify_quote
from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.identity import SgxIdentity, TdxIdentity
from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    TCG_EVIDENCE_OID,
    TCG_EVIDENCE_TAG,
    bound_quote,
    check_validity,
    extract_evidence,
    tcg_claims,
)
from teaclave_ma.transport.ratls_cert import create_ratls_certificate
from teaclave_ma.trust.manifest_trust import AcceptedVersion

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Inside both real samples' collateral windows (see ../shared/data/README.md).
SAMPLE_TIME = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
# A fixed key, so that seeds saved by one run still bind the key in the next.
HARNESS_KEY = ec.derive_private_key(0x7EAC1A7E, ec.SECP256R1())
CERTIFICATE_LIFETIME = dt.timedelta(days=3650)


class CertificateMode(enum.IntEnum):
    """The first byte of a certificate input says what the rest is."""

    DER = 0  # a whole certificate, PEM or DER
    LEGACY_QUOTE = 1  # the legacy quote extension's value, in a certificate signed here
    TCG_EVIDENCE = 2  # the TCG tagged-evidence extension's value, likewise


def real_sample(path: str) -> bytes:
    return (SHARED_DATA / path).read_bytes()


def gramine_certificate_der() -> bytes:
    pem = real_sample("ratls/gramine-cert.pem")
    return base64.b64decode(b"".join(line for line in pem.splitlines() if b"-----" not in line))


# Where ``python -m fuzzing`` keeps its simulated platform, so that inputs saved by one run
# still verify under the same simulated root in the next; None makes one per process.
platform_dir: Path | None = None


@functools.cache
def simulated_platform() -> SimulatedPlatform:
    """The simulated platform (created as of SAMPLE_TIME) whose quotes seed the targets."""
    if platform_dir is not None and (platform_dir / STATE_FILE).is_file():
        return SimulatedPlatform.load(platform_dir)
    platform = SimulatedPlatform.create(now=SAMPLE_TIME)
    if platform_dir is not None:
        platform.save(platform_dir)
    return platform


def simulated_sgx_identity(*, debug: bool = False) -> SgxIdentity:
    return SgxIdentity(bytes(range(32)), bytes(range(32, 64)), 4, 2, debug)


def simulated_tdx_identity() -> TdxIdentity:
    # SEPT_VE_DISABLE (byte 3, bit 4) set, as the verifier requires.
    attributes = bytes([0, 0, 0, 0x10, 0, 0, 0, 0])
    registers = {
        name: bytes([i]) * 48 for i, name in enumerate(("rtmr0", "rtmr1", "rtmr2", "rtmr3"))
    }
    return TdxIdentity(mr_td=bytes(48), td_attributes=attributes, xfam=bytes(8), **registers)


def simulated_quotes(report_data: bytes = bytes(64)) -> dict[str, bytes]:
    """One quote of each version the simulated platform makes: v3 SGX, v4 and v5 TDX."""
    platform = simulated_platform()
    return {
        "sim-v3": platform.quote(simulated_sgx_identity(), report_data),
        "sim-v3-debug": platform.quote(simulated_sgx_identity(debug=True), report_data),
        "sim-v4": platform.td_quote(simulated_tdx_identity(), report_data),
        "sim-v5": platform.td_quote(simulated_tdx_identity(), report_data, v5=True),
    }


@functools.cache
def _simulated_anchor() -> TrustAnchor:
    return TrustAnchor.for_root(simulated_platform().root_certificate_der, "simulated root")


def quote_seeds() -> dict[str, bytes]:
    return {"sgx-v3": real_sample("sgx/quote.bin"), "tdx-v4": real_sample("tdx/quote.bin")} | (
        simulated_quotes()
    )


@functools.cache
def real_collateral() -> dict[str, Collateral]:
    """The real samples' collateral, by TEE."""
    return {
        tee: Collateral.from_json(real_sample(f"{tee.lower()}/collateral.json"))
        for tee in ("SGX", "TDX")
    }


def quote_target(data: bytes) -> None:
    """Parse a quote; when it parses, read its PCK chain and extension, and verify it
    against the real collateral of its TEE as of SAMPLE_TIME."""
    try:
        quote = parse_quote(data)
    except TeaclaveMAError:
        return
    _inspect_quote(quote)


def _inspect_quote(quote: Quote) -> None:
    quote.describe()
    with contextlib.suppress(TeaclaveMAError):
        parse_pck_extension(pck_certificates(quote.certification.pck_chain_pem)[0])
    policy = VerificationPolicy.permissive_tcb()
    # Real quotes verify under Intel's root, simulated ones under the simulated root; each
    # input is tried under both so that either kind reaches the checks after the chain.
    with contextlib.suppress(TeaclaveMAError):
        verify_quote(quote, real_collateral()[quote.tee], SAMPLE_TIME, policy)
    platform = simulated_platform()
    with contextlib.suppress(TeaclaveMAError):
        verify_quote(
            quote,
            Collateral.from_json(platform.collateral_json(quote.tee)),
            SAMPLE_TIME,
            policy,
            _simulated_anchor(),
        )


def harness_certificate(oid: str, value: bytes) -> bytes:
    """DER of a certificate self-signed by HARNESS_KEY, carrying ``value`` under ``oid``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(HARNESS_KEY.public_key())
        .serial_number(1)
        .not_valid_before(SAMPLE_TIME - CERTIFICATE_LIFETIME)
        .not_valid_after(SAMPLE_TIME + CERTIFICATE_LIFETIME)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
        .sign(HARNESS_KEY, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def certificate_input(data: bytes) -> bytes:
    """The certificate a certificate-target input stands for."""
    if not data:
        return data
    mode, rest = data[0] % len(CertificateMode), data[1:]
    if mode == CertificateMode.LEGACY_QUOTE:
        return harness_certificate(LEGACY_QUOTE_OID, rest)
    if mode == CertificateMode.TCG_EVIDENCE:
        return harness_certificate(TCG_EVIDENCE_OID, rest)
    return rest


def certificate_target(data: bytes) -> None:
    """Extract the evidence of a certificate, check its dates and that its quote binds its
    key; when that holds, inspect the bound quote as ``quote_target`` does."""
    try:
        evidence = extract_evidence(certificate_input(data))
        check_validity(evidence, SAMPLE_TIME)
        quote = bound_quote(evidence)
    except TeaclaveMAError:
        return
    _inspect_quote(quote)


def certificate_seeds() -> dict[str, bytes]:
    """Whole certificates (real Gramine, simulated RA-TLS) and, for the harness key, a
    binding legacy quote and a binding TCG evidence value."""
    platform = simulated_platform()
    simulated = create_ratls_certificate(
        HARNESS_KEY,
        lambda report_data: platform.quote(simulated_sgx_identity(), report_data),
        common_name="fuzz",
        now=SAMPLE_TIME,
        lifetime=CERTIFICATE_LIFETIME,
        manifest=AcceptedVersion(1, bytes(32).hex()),  # as teaclave-ma services claim
    )
    spki = HARNESS_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Quotes whose report_data binds the harness key, as each extension defines it.
    claims = tcg_claims(spki)
    legacy = simulated_quotes(hashlib.sha256(spki).digest() + bytes(32))
    tcg = simulated_quotes(hashlib.sha256(claims).digest() + bytes(32))
    der = bytes([CertificateMode.DER])
    seeds = {
        "gramine-der": der + gramine_certificate_der(),
        "gramine-pem": der + real_sample("ratls/gramine-cert.pem"),
        "simulated-der": der + simulated,
    }
    for name, quote in legacy.items():
        seeds[f"legacy-{name}"] = bytes([CertificateMode.LEGACY_QUOTE]) + quote
    for name, quote in tcg.items():
        evidence = cbor2.dumps(cbor2.CBORTag(TCG_EVIDENCE_TAG, [quote, claims]))
        seeds[f"tcg-{name}"] = bytes([CertificateMode.TCG_EVIDENCE]) + evidence
    return seeds


TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], dict[str, bytes]]]] = {
    "quote": (quote_target, quote_seeds),
    "certificate": (certificate_target, certificate_seeds),
}
