"""DCAP quote verification: one code path for hardware and simulated quotes, which differ
only in the trust anchor. Pure: bytes and an explicit time in, a result or an error out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import attrs
from cryptography import x509

from teaclave_ma.attestation import collateral as collateral_module
from teaclave_ma.attestation import pki, x509_load
from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.pki import (
    ec_public_key,
    ecdsa_p256_verify,
    ensure_not_revoked,
    p256_key_from_raw,
    signed_by_certificate,
    subject_cn,
    verify_chain,
    verify_crl,
)
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import (
    Quote,
    SgxReportBody,
    TdReportBody,
    parse_quote,
    pck_certificates,
)
from teaclave_ma.attestation.tcb import converge, isv_level, platform_level, tdx_module_status
from teaclave_ma.identity import SgxIdentity

log = logging.getLogger(__name__)

TD_SEPT_VE_DISABLE = 0x10  # bit 28 of TDATTRIBUTES, in byte 3
TCB_SIGNING_NAME = "TCB Signing"  # Intel's is "Intel SGX TCB Signing"


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


def _check_time(
    check: str, what: str, issued: dt.datetime, next_update: dt.datetime, now: dt.datetime
) -> None:
    if not issued <= now <= next_update:
        raise QuoteVerificationError(
            check,
            f"{what} is not current at {now:%Y-%m-%dT%H:%M:%SZ} "
            f"(issued {issued:%Y-%m-%dT%H:%M:%SZ}, next update {next_update:%Y-%m-%dT%H:%M:%SZ})",
        )


def clear_caches() -> None:
    """Forget everything remembered by bytes (parsed chains and collateral, signature
    checks): for measurements of the cold path."""
    pki.signed_by.cache_clear()
    pki.signed_by_certificate.cache_clear()
    x509_load.clear_cache()
    collateral_module.clear_cache()


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
    pck = _check_pck_chain(quote, collateral, now, anchor)
    _check_signatures(quote, pck)
    qe_status, qe_advisories = _check_qe_identity(quote, collateral, now, anchor)
    status, advisories, fmspc = _evaluate_tcb(quote, collateral, pck, now, anchor)
    status = converge(status, qe_status)
    advisories += [a for a in qe_advisories if a not in advisories]
    crl_updates = [crl.next_update_utc for crl in (collateral.root_ca_crl, collateral.pck_crl)]
    expires = min(
        collateral.tcb_info.next_update,
        collateral.qe_identity.next_update,
        *(moment for moment in crl_updates if moment is not None),
    )
    result = VerifiedQuote(quote, quote.tee, status, tuple(advisories), expires, fmspc, anchor)
    apply_policy(result, policy)
    if anchor.simulated:
        log.debug("quote verified under a simulated root (%s)", anchor.name)
    return result


def _check_pck_chain(
    quote: Quote, collateral: Collateral, now: dt.datetime, anchor: TrustAnchor
) -> x509.Certificate:
    """PCK chain up to the anchor, valid now; both CRLs current, signed, and not listing it."""
    chain = pck_certificates(quote.certification.pck_chain_pem)
    verify_chain(chain, anchor, now, "pck_chain")
    pck, pck_issuer, root = chain[0], chain[1], chain[-1]
    verify_crl(collateral.root_ca_crl, root, now, "root_ca_crl")
    for ca in chain[1:-1]:
        ensure_not_revoked(ca, collateral.root_ca_crl, "revoked")
    verify_chain(collateral.pck_crl_issuer_chain, anchor, now, "pck_crl_issuer_chain")
    verify_crl(collateral.pck_crl, pck_issuer, now, "pck_crl")
    ensure_not_revoked(pck, collateral.pck_crl, "revoked")
    return pck


def _check_signatures(quote: Quote, pck: x509.Certificate) -> None:
    """The QE report is signed by the PCK key and binds the attestation key, which signed the quote."""
    certification = quote.certification
    qe_report = certification.qe_report
    if not ecdsa_p256_verify(
        ec_public_key(pck, "pck_chain"), certification.qe_report_signature, qe_report.raw
    ):
        raise QuoteVerificationError(
            "qe_report_signature", "QE report signature does not verify under the PCK key"
        )
    expected = hashlib.sha256(quote.attestation_key + certification.qe_auth_data).digest() + bytes(
        32
    )
    if qe_report.report_data != expected:
        raise QuoteVerificationError(
            "qe_report_data",
            "QE report_data is not SHA-256(attestation key || QE auth data): "
            f"expected {expected[:32].hex()}, got {qe_report.report_data[:32].hex()}",
        )
    attestation_key = p256_key_from_raw(quote.attestation_key)
    if not ecdsa_p256_verify(attestation_key, quote.quote_signature, quote.signed_bytes):
        raise QuoteVerificationError(
            "quote_signature", "quote signature does not verify under the attestation key"
        )


def _check_signed_json(
    what: str, chain: tuple[x509.Certificate, ...], raw: bytes, signature: bytes, *,
    collateral: Collateral, now: dt.datetime, anchor: TrustAnchor,
) -> None:  # fmt: skip
    verify_chain(chain, anchor, now, f"{what}_chain")
    # Only the TCB signing certificate may sign TCB info and QE identities, not any
    # certificate the root issued (such as a PCK CA's).
    if TCB_SIGNING_NAME not in subject_cn(chain[0]):
        raise QuoteVerificationError(
            f"{what}_chain",
            f"{what} is signed by {subject_cn(chain[0])!r}, not a TCB signing certificate",
        )
    ensure_not_revoked(chain[0], collateral.root_ca_crl, "revoked")
    ec_public_key(chain[0], f"{what}_signature")  # a clear error for a key of another kind
    if not signed_by_certificate(chain[0], signature, raw):
        raise QuoteVerificationError(
            f"{what}_signature", f"{what} is not signed by {subject_cn(chain[0])!r}"
        )


def _check_qe_identity(
    quote: Quote, collateral: Collateral, now: dt.datetime, anchor: TrustAnchor
) -> tuple[str, tuple[str, ...]]:
    """QE identity: signed by the TCB signing chain, current, and matching the QE report."""
    identity = collateral.qe_identity
    qe_report = quote.certification.qe_report
    _check_signed_json(
        "qe_identity", collateral.qe_identity_issuer_chain, collateral.qe_identity_raw,
        collateral.qe_identity_signature, collateral=collateral, now=now, anchor=anchor,
    )  # fmt: skip
    _check_time(
        "qe_identity_validity", "QE identity", identity.issue_date, identity.next_update, now
    )
    expected_id = "TD_QE" if quote.tee == "TDX" else "QE"
    if identity.id != expected_id:
        raise QuoteVerificationError(
            "qe_identity",
            f"QE identity is for {identity.id!r}, a {quote.tee} quote needs {expected_id!r}",
        )
    if qe_report.mr_signer != identity.mrsigner:
        raise QuoteVerificationError(
            "qe_identity",
            f"QE mrsigner {qe_report.mr_signer.hex()} is not {identity.mrsigner.hex()}",
        )
    if qe_report.isv_prod_id != identity.isvprodid:
        raise QuoteVerificationError(
            "qe_identity", f"QE isvprodid {qe_report.isv_prod_id} is not {identity.isvprodid}"
        )
    if (
        qe_report.misc_select & identity.miscselect_mask
        != identity.miscselect & identity.miscselect_mask
    ):
        raise QuoteVerificationError(
            "qe_identity", "QE miscselect does not match the QE identity under its mask"
        )
    masked = bytes(
        a & m for a, m in zip(qe_report.attributes, identity.attributes_mask, strict=True)
    )
    if masked != bytes(
        a & m for a, m in zip(identity.attributes, identity.attributes_mask, strict=True)
    ):
        raise QuoteVerificationError(
            "qe_identity", "QE attributes do not match the QE identity under its mask"
        )
    return isv_level(identity.levels, qe_report.isv_svn, "QE")


def _evaluate_tcb(
    quote: Quote,
    collateral: Collateral,
    pck: x509.Certificate,
    now: dt.datetime,
    anchor: TrustAnchor,
) -> tuple[str, list[str], bytes]:
    """TCB info: signed, current, for this platform; the platform's TCB level and status."""
    info = collateral.tcb_info
    _check_signed_json(
        "tcb_info", collateral.tcb_info_issuer_chain, collateral.tcb_info_raw,
        collateral.tcb_info_signature, collateral=collateral, now=now, anchor=anchor,
    )  # fmt: skip
    _check_time("tcb_info_validity", "TCB info", info.issue_date, info.next_update, now)
    if info.id != quote.tee:
        raise QuoteVerificationError(
            "tcb_info", f"TCB info is for {info.id!r}, the quote is {quote.tee}"
        )
    extension = parse_pck_extension(pck)
    if extension.fmspc != info.fmspc:
        raise QuoteVerificationError(
            "fmspc",
            f"PCK FMSPC {extension.fmspc.hex()} differs from TCB info FMSPC {info.fmspc.hex()}",
        )
    if extension.pce_id != info.pce_id:
        raise QuoteVerificationError(
            "pce_id",
            f"PCK PCE id {extension.pce_id.hex()} differs from TCB info {info.pce_id.hex()}",
        )
    td = quote.body if isinstance(quote.body, TdReportBody) else None
    level = platform_level(info, extension, td)
    status, advisories = level.status, list(level.advisory_ids)
    if td is not None:
        module_status, module_advisories = tdx_module_status(info, td)
        status = converge(status, module_status)
        advisories += [a for a in module_advisories if a not in advisories]
    return status, advisories, extension.fmspc


def apply_policy(result: VerifiedQuote, policy: VerificationPolicy) -> None:
    if result.tcb_status == "Revoked":
        raise PolicyRejected("tcb_status", "the platform's TCB is Revoked", result)
    if result.tcb_status not in policy.allowed_tcb_statuses:
        raise PolicyRejected(
            "tcb_status",
            f"TCB status {result.tcb_status} is not allowed (allowed: {', '.join(sorted(policy.allowed_tcb_statuses))}; "
            f"advisories: {', '.join(result.advisory_ids) or 'none'})",
            result,
        )
    body = result.quote.body
    if isinstance(body, TdReportBody) and not body.td_attributes[3] & TD_SEPT_VE_DISABLE:
        # Without SEPT_VE_DISABLE the untrusted host can inject #VE exceptions into the TD.
        raise PolicyRejected(
            "td_attributes",
            "the TD runs without SEPT_VE_DISABLE, which this verifier refuses",
            result,
        )
    if result.quote.body.debug and not policy.allow_debug:
        raise PolicyRejected(
            "debug",
            f"the {result.tee} report is from a debug enclave, which this policy refuses",
            result,
        )
