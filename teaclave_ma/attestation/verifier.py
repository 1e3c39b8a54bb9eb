"""DCAP quote verification: one code path for hardware and simulated quotes, which differ
only in the trust anchor. Pure: bytes and an explicit time in, a result or an error out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import attrs
from cryptography.hazmat.primitives import serialization

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.pki import (
    ec_public_key,
    ecdsa_p256_verify,
    ensure_not_revoked,
    p256_key_from_raw,
    subject_cn,
    verify_chain,
    verify_crl,
)
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import Quote, SgxReportBody, TdReportBody, parse_quote, pck_certificates
from teaclave_ma.attestation.tcb import converge, isv_level, platform_level, tdx_module_status
from teaclave_ma.identity import SgxIdentity

log = logging.getLogger(__name__)


@attrs.frozen
class VerifiedQuote:
    quote: Quote
    tee: str
    tcb_status: str
    advisory_ids: tuple[str, ...]
    collateral_expires: dt.datetime
    fmspc: bytes
    anchor: TrustAnchor

    @property
    def identity(self) -> SgxIdentity | None:
        body = self.quote.body
        return body.identity() if isinstance(body, SgxReportBody) else None

    @property
    def report_data(self) -> bytes:
        return self.quote.report_data


def _check_time(check: str, what: str, issued: dt.datetime, next_update: dt.datetime, now: dt.datetime) -> None:
    if not issued <= now <= next_update:
        raise QuoteVerificationError(
            check,
            f"{what} is not current at {now:%Y-%m-%dT%H:%M:%SZ} "
            f"(issued {issued:%Y-%m-%dT%H:%M:%SZ}, next update {next_update:%Y-%m-%dT%H:%M:%SZ})",
        )


def verify_quote(
    quote: Quote | bytes,
    collateral: Collateral,
    now: dt.datetime,
    policy: VerificationPolicy,
    anchor: TrustAnchor = INTEL_SGX_ROOT_CA,
) -> VerifiedQuote:
    """Verify ``quote`` as of ``now``; raises a ``QuoteVerificationError`` naming the check."""
    if not isinstance(quote, Quote):
        quote = parse_quote(quote)
    certification = quote.certification

    # 1. PCK certificate chain up to the anchor, valid now.
    chain = pck_certificates(certification.pck_chain_pem)
    verify_chain(chain, anchor, now, "pck_chain")
    pck, pck_issuer, root = chain[0], chain[1], chain[-1]

    # 2. CRLs: the root's CRL and the PCK issuer's CRL, current and correctly signed.
    verify_crl(collateral.root_ca_crl, root, now, "root_ca_crl")
    for ca in chain[1:-1]:
        ensure_not_revoked(ca, collateral.root_ca_crl, "revoked")
    verify_chain(collateral.pck_crl_issuer_chain, anchor, now, "pck_crl_issuer_chain")
    verify_crl(collateral.pck_crl, pck_issuer, now, "pck_crl")
    ensure_not_revoked(pck, collateral.pck_crl, "revoked")

    # 3-5. The QE report is signed by the PCK key, binds the attestation key, and the
    # attestation key signed the quote.
    qe_report = certification.qe_report
    if not ecdsa_p256_verify(ec_public_key(pck, "pck_chain"), certification.qe_report_signature, qe_report.raw):
        raise QuoteVerificationError("qe_report_signature", "QE report signature does not verify under the PCK key")
    expected = hashlib.sha256(quote.attestation_key + certification.qe_auth_data).digest() + bytes(32)
    if qe_report.report_data != expected:
        raise QuoteVerificationError(
            "qe_report_data",
            "QE report_data is not SHA-256(attestation key || QE auth data): "
            f"expected {expected[:32].hex()}, got {qe_report.report_data[:32].hex()}",
        )
    attestation_key = p256_key_from_raw(quote.attestation_key)
    if not ecdsa_p256_verify(attestation_key, quote.quote_signature, quote.signed_bytes):
        raise QuoteVerificationError("quote_signature", "quote signature does not verify under the attestation key")

    # 6. QE identity: signed by the TCB signing chain, current, and matching the QE report.
    identity = collateral.qe_identity
    signing = collateral.qe_identity_issuer_chain
    verify_chain(signing, anchor, now, "qe_identity_chain")
    ensure_not_revoked(signing[0], collateral.root_ca_crl, "revoked")
    if not ecdsa_p256_verify(ec_public_key(signing[0], "qe_identity_signature"), collateral.qe_identity_signature, collateral.qe_identity_raw):
        raise QuoteVerificationError("qe_identity_signature", f"QE identity is not signed by {subject_cn(signing[0])!r}")
    _check_time("qe_identity_validity", "QE identity", identity.issue_date, identity.next_update, now)
    expected_id = "TD_QE" if quote.tee == "TDX" else "QE"
    if identity.id != expected_id:
        raise QuoteVerificationError("qe_identity", f"QE identity is for {identity.id!r}, a {quote.tee} quote needs {expected_id!r}")
    if qe_report.mr_signer != identity.mrsigner:
        raise QuoteVerificationError("qe_identity", f"QE mrsigner {qe_report.mr_signer.hex()} is not {identity.mrsigner.hex()}")
    if qe_report.isv_prod_id != identity.isvprodid:
        raise QuoteVerificationError("qe_identity", f"QE isvprodid {qe_report.isv_prod_id} is not {identity.isvprodid}")
    if qe_report.misc_select & identity.miscselect_mask != identity.miscselect & identity.miscselect_mask:
        raise QuoteVerificationError("qe_identity", "QE miscselect does not match the QE identity under its mask")
    masked = bytes(a & m for a, m in zip(qe_report.attributes, identity.attributes_mask, strict=True))
    if masked != bytes(a & m for a, m in zip(identity.attributes, identity.attributes_mask, strict=True)):
        raise QuoteVerificationError("qe_identity", "QE attributes do not match the QE identity under its mask")
    qe_status, qe_advisories = isv_level(identity.levels, qe_report.isv_svn, "QE")

    # 7. TCB info: signed, current, for this platform; the platform's TCB level.
    info = collateral.tcb_info
    signing = collateral.tcb_info_issuer_chain
    verify_chain(signing, anchor, now, "tcb_info_chain")
    ensure_not_revoked(signing[0], collateral.root_ca_crl, "revoked")
    if not ecdsa_p256_verify(ec_public_key(signing[0], "tcb_info_signature"), collateral.tcb_info_signature, collateral.tcb_info_raw):
        raise QuoteVerificationError("tcb_info_signature", f"TCB info is not signed by {subject_cn(signing[0])!r}")
    _check_time("tcb_info_validity", "TCB info", info.issue_date, info.next_update, now)
    if info.id != quote.tee:
        raise QuoteVerificationError("tcb_info", f"TCB info is for {info.id!r}, the quote is {quote.tee}")
    extension = parse_pck_extension(pck)
    if extension.fmspc != info.fmspc:
        raise QuoteVerificationError("fmspc", f"PCK FMSPC {extension.fmspc.hex()} differs from TCB info FMSPC {info.fmspc.hex()}")
    if extension.pce_id != info.pce_id:
        raise QuoteVerificationError("pce_id", f"PCK PCE id {extension.pce_id.hex()} differs from TCB info {info.pce_id.hex()}")
    td = quote.body if isinstance(quote.body, TdReportBody) else None
    level = platform_level(info, extension, td)
    status = converge(level.status, qe_status)
    advisories = list(level.advisory_ids) + [a for a in qe_advisories if a not in level.advisory_ids]
    if td is not None:
        module_status, module_advisories = tdx_module_status(info, td)
        status = converge(status, module_status)
        advisories += [a for a in module_advisories if a not in advisories]

    expires = min(
        info.next_update,
        identity.next_update,
        collateral.root_ca_crl.next_update_utc or now,
        collateral.pck_crl.next_update_utc or now,
    )
    result = VerifiedQuote(quote, quote.tee, status, tuple(advisories), expires, extension.fmspc, anchor)
    if status == "Revoked":
        raise PolicyRejected("tcb_status", "the platform's TCB is Revoked", result)

    # 8. The relying party's policy.
    if status not in policy.allowed_tcb_statuses:
        raise PolicyRejected(
            "tcb_status",
            f"TCB status {status} is not allowed (allowed: {', '.join(sorted(policy.allowed_tcb_statuses))}; "
            f"advisories: {', '.join(advisories) or 'none'})",
            result,
        )
    if quote.body.debug and not policy.allow_debug:
        raise PolicyRejected("debug", f"the {quote.tee} report is from a debug enclave, which this policy refuses", result)
    if anchor.simulated:
        log.debug("quote verified under a simulated root (%s)", anchor.name)
    return result


def root_der(quote: Quote) -> bytes:
    """DER of the root certificate a quote's PCK chain ends with (for ``--root`` tooling)."""
    return pck_certificates(quote.certification.pck_chain_pem)[-1].public_bytes(serialization.Encoding.DER)
