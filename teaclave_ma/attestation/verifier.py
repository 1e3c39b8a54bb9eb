"""DCAP quote verification: one code path for hardware and simulated quotes, which differ
only in the trust anchor. Pure: bytes and an explicit time in, a result or an error out.

Two caches remember what a new quote from a known platform does not change: the checks
of a collateral set (its chains, CRL and JSON signatures), keyed by its bytes, and of a PCK
chain, keyed by its PEM bytes (signatures, the SGX extension). Each holds successes only,
is keyed by the trust anchor too, and is used only inside the period in which everything
it covers is valid (for collateral, until its earliest nextUpdate). The PCK and its CA are
looked up in the CRLs of the collateral at hand, the PCK CRL checked and the quote and QE
report signatures verified on every use.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import logging
import threading
from typing import Generic, TypeVar

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from teaclave_ma.attestation import collateral as collateral_module
from teaclave_ma.attestation import pki, x509_load
from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.collateral import Collateral, IsvLevel
from teaclave_ma.attestation.errors import PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.pck_extension import PckExtension, parse_pck_extension
from teaclave_ma.attestation.pki import (
    chain_window,
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
from teaclave_ma.attestation.tcb import (
    converge,
    isv_level,
    isv_shortfall,
    match_levels,
    platform_shortfalls,
    td_relaunch,
    tdx_module,
)
from teaclave_ma.identity import SgxIdentity

log = logging.getLogger(__name__)

TD_SEPT_VE_DISABLE = 0x10  # bit 28 of TDATTRIBUTES, in byte 3
TCB_SIGNING_NAME = "TCB Signing"  # Intel's is "Intel SGX TCB Signing"


@attrs.frozen
class VerifiedQuote:
    quote: Quote
    tee: str
    tcb_status: str
    # Of the platform's TCB level, then of the TDX module's and the QE's levels (as
    # dcap-qvl reports them; Intel's QvE lists the platform level's only).
    advisory_ids: tuple[str, ...]
    # The earliest moment anything the verification relied on stops being valid.
    evidence_expires: dt.datetime
    fmspc: bytes
    anchor: TrustAnchor
    tcb_info_evaluation_data_number: int
    qe_identity_evaluation_data_number: int
    tcb_date: dt.datetime  # of the platform's TCB level
    qe_tcb_date: dt.datetime  # of the QE identity level the QE is at
    ppid: bytes  # with fmspc, what manifest entries may pin
    # Why the status is not UpToDate: each component below the level it would need.
    shortfalls: tuple[str, ...] = ()

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The collateral's TCB evaluation: the older of its two pieces' (as Intel's QvE
        reports tcb_eval_ref_num)."""
        return min(self.tcb_info_evaluation_data_number, self.qe_identity_evaluation_data_number)

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


K = TypeVar("K")
V = TypeVar("V")
Window = tuple[dt.datetime, dt.datetime]


class ValidityCache(Generic[K, V]):
    """A bounded map of verification results, each usable only inside its validity window
    (both ends included); an entry asked for outside it is dropped. Callers put successes
    only. Thread-safe: verifiers run in every connection's thread."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: collections.OrderedDict[K, tuple[V, Window]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K, now: dt.datetime) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1][0] <= now <= entry[1][1]:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None

    def put(self, key: K, value: V, window: Window) -> None:
        with self._lock:
            self._entries[key] = (value, window)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


@attrs.frozen
class VerifiedPckChain:
    """A PCK chain whose signatures up to the anchor have been checked."""

    certificates: tuple[x509.Certificate, ...]
    extension: PckExtension
    key: ec.EllipticCurvePublicKey  # the PCK's, which signs the QE report
    window: Window  # in which every certificate of the chain is valid


@attrs.frozen
class _CheckedCollateral:
    """The collateral object that was checked (its parsed views are what the signatures
    vouched for), and until when all of it holds."""

    collateral: Collateral
    valid_until: dt.datetime


# Collateral by (SHA-256 of its JSON, anchor); PCK chains by (PEM bytes, anchor).
collateral_cache: ValidityCache[tuple[bytes, TrustAnchor], _CheckedCollateral] = ValidityCache(64)
pck_chain_cache: ValidityCache[tuple[bytes, TrustAnchor], VerifiedPckChain] = ValidityCache(256)
# Verified QE reports by (PCK certificate, signature, report bytes).
qe_report_cache: ValidityCache[tuple[x509.Certificate, bytes, bytes], bool] = ValidityCache(256)


def clear_caches(*, collateral: bool = True, pck_chains: bool = True) -> None:
    """Forget verified collateral and PCK chains (as chosen), and everything remembered by
    bytes below them (parsed chains and collateral, signature checks): for measurements."""
    pki.signed_by.cache_clear()
    pki.signed_by_certificate.cache_clear()
    pki.p256_key_from_raw.cache_clear()
    pki.crl_signed_by.cache_clear()
    pki.der_sha256.cache_clear()
    x509_load.clear_cache()
    if collateral:
        collateral_module.clear_cache()
        collateral_cache.clear()
    if pck_chains:
        pck_chain_cache.clear()
        qe_report_cache.clear()


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
    pck = verified_pck_chain(quote, anchor, now)
    collateral_until = _check_collateral(collateral, pck.certificates[-1], now, anchor)
    pck_crl_until = _check_pck_revocation(pck.certificates, collateral, now)
    _check_signatures(quote, pck, now)
    qe_level = _check_qe_identity(quote, collateral)
    tcb = _evaluate_tcb(quote, collateral, pck.extension, qe_level)
    # Whoever remembers this result must not outlive anything it rests on: a collateral
    # piece's nextUpdate, or a certificate's notAfter (the PCK chain's and the signers').
    expires = min(collateral_until, pck_crl_until, pck.window[1])
    result = VerifiedQuote(
        quote=quote,
        tee=quote.tee,
        tcb_status=tcb.status,
        advisory_ids=tcb.advisory_ids,
        evidence_expires=expires,
        fmspc=pck.extension.fmspc,
        anchor=anchor,
        tcb_info_evaluation_data_number=collateral.tcb_info.tcb_evaluation_data_number,
        qe_identity_evaluation_data_number=collateral.qe_identity.tcb_evaluation_data_number,
        tcb_date=tcb.tcb_date,
        qe_tcb_date=qe_level.tcb_date,
        ppid=pck.extension.ppid,
        shortfalls=tcb.shortfalls,
    )
    _apply_policy_naming_qe(result, policy, qe_level.status, quote.certification.qe_report.isv_svn)
    if anchor.simulated:
        log.debug("quote verified under a simulated root (%s)", anchor.name)
    return result


def verified_pck_chain(quote: Quote, anchor: TrustAnchor, now: dt.datetime) -> VerifiedPckChain:
    """The quote's PCK chain up to the anchor, each certificate valid now, with its SGX
    extension read: from the cache, or checked now and cached."""
    pem = quote.certification.pck_chain_pem
    cached = pck_chain_cache.get((pem, anchor), now)
    if cached is not None:
        return cached
    chain = pck_certificates(pem)
    verify_chain(chain, anchor, now, "pck_chain")
    verified = VerifiedPckChain(
        tuple(chain),
        parse_pck_extension(chain[0]),
        ec_public_key(chain[0], "pck_chain"),
        chain_window(chain),
    )
    pck_chain_cache.put((pem, anchor), verified, verified.window)
    return verified


def _check_collateral(
    collateral: Collateral, root: x509.Certificate, now: dt.datetime, anchor: TrustAnchor
) -> dt.datetime:
    """What the collateral vouches for by itself: the root CRL, the PCK CRL issuer chain, the
    TCB info and QE identity signed by the TCB signing chain, all current; returns until
    when all of it holds. ``root`` is the anchor's certificate (from the quote's verified
    chain)."""
    key = (collateral.sha256, anchor)
    cached = collateral_cache.get(key, now)
    if cached is not None and cached.collateral is collateral:
        # Signatures, names and the TCB signer's revocation were checked for these very
        # bytes (the root CRL among them); the window covers the times.
        return cached.valid_until
    root_crl_until = verify_crl(
        collateral.root_ca_crl, collateral.root_ca_crl_der, root, now, "root_ca_crl"
    )
    verify_chain(collateral.pck_crl_issuer_chain, anchor, now, "pck_crl_issuer_chain")
    identity, info = collateral.qe_identity, collateral.tcb_info
    _check_signed_json(
        "qe_identity", collateral.qe_identity_issuer_chain, collateral.qe_identity_raw,
        collateral.qe_identity_signature, collateral=collateral, now=now, anchor=anchor,
    )  # fmt: skip
    _check_time(
        "qe_identity_validity", "QE identity", identity.issue_date, identity.next_update, now
    )
    _check_signed_json(
        "tcb_info", collateral.tcb_info_issuer_chain, collateral.tcb_info_raw,
        collateral.tcb_info_signature, collateral=collateral, now=now, anchor=anchor,
        # the same text as the QE identity's chain is one parsed object, checked just now
        chain_checked=collateral.tcb_info_issuer_chain is collateral.qe_identity_issuer_chain,
    )  # fmt: skip
    _check_time("tcb_info_validity", "TCB info", info.issue_date, info.next_update, now)
    chains = (
        collateral.pck_crl_issuer_chain,
        collateral.qe_identity_issuer_chain,
        collateral.tcb_info_issuer_chain,
    )
    periods = [
        # the TCB signing chains are usually one parsed object: its window once
        *(chain_window(chain) for chain in {id(chain): chain for chain in chains}.values()),
        (identity.issue_date, identity.next_update),
        (info.issue_date, info.next_update),
        (collateral.root_ca_crl.last_update_utc, root_crl_until),
    ]
    window = (max(start for start, _ in periods), min(end for _, end in periods))
    collateral_cache.put(key, _CheckedCollateral(collateral, window[1]), window)
    return window[1]


def _check_pck_revocation(
    chain: tuple[x509.Certificate, ...], collateral: Collateral, now: dt.datetime
) -> dt.datetime:
    """Neither the PCK nor its CA is revoked; the PCK CRL is the CA's own and current (until
    the returned next update)."""
    for ca in chain[1:-1]:
        ensure_not_revoked(ca, collateral.root_ca_crl, "revoked")
    pck_crl_until = verify_crl(collateral.pck_crl, collateral.pck_crl_der, chain[1], now, "pck_crl")
    ensure_not_revoked(chain[0], collateral.pck_crl, "revoked")
    return pck_crl_until


def _check_signatures(quote: Quote, pck: VerifiedPckChain, now: dt.datetime) -> None:
    """The QE report is signed by the PCK key and binds the attestation key, which signed the quote.

    The QE signs one report per attestation key, so every quote of a platform carries the
    same report and signature: a verified one is remembered, while its PCK chain is valid."""
    certification = quote.certification
    qe_report = certification.qe_report
    key = (pck.certificates[0], certification.qe_report_signature, qe_report.raw)
    if qe_report_cache.get(key, now) is None:
        if not ecdsa_p256_verify(pck.key, certification.qe_report_signature, qe_report.raw):
            raise QuoteVerificationError(
                "qe_report_signature", "QE report signature does not verify under the PCK key"
            )
        qe_report_cache.put(key, True, pck.window)
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
    collateral: Collateral, now: dt.datetime, anchor: TrustAnchor, chain_checked: bool = False,
) -> None:  # fmt: skip
    if not chain_checked:
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


def _check_qe_identity(quote: Quote, collateral: Collateral) -> IsvLevel:
    """The (checked) QE identity matches the QE report: the level the QE is at."""
    identity = collateral.qe_identity
    qe_report = quote.certification.qe_report
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
    # The report's value under the mask must be the identity's value itself, unmasked, as
    # in Intel's EnclaveReportVerifier.cpp (4.1.2.9.5 and .6).
    misc_select = qe_report.misc_select & identity.miscselect_mask
    if misc_select != identity.miscselect:
        raise QuoteVerificationError(
            "qe_identity",
            f"QE miscselect {misc_select:08x} under the mask {identity.miscselect_mask:08x} "
            f"is not the QE identity's {identity.miscselect:08x}",
        )
    masked = bytes(
        a & m for a, m in zip(qe_report.attributes, identity.attributes_mask, strict=True)
    )
    if masked != identity.attributes:
        raise QuoteVerificationError(
            "qe_identity",
            f"QE attributes {masked.hex()} under the mask {identity.attributes_mask.hex()} "
            f"are not the QE identity's {identity.attributes.hex()}",
        )
    level = isv_level(identity.levels, qe_report.isv_svn, "QE")
    if level.status not in ("UpToDate", "Revoked"):
        # Intel's EnclaveReportVerifier treats every other QE level status as OutOfDate.
        level = attrs.evolve(level, status="OutOfDate")
    return level


@attrs.frozen
class _Tcb:
    status: str
    advisory_ids: tuple[str, ...]
    tcb_date: dt.datetime
    shortfalls: tuple[str, ...]


def _evaluate_tcb(
    quote: Quote, collateral: Collateral, extension: PckExtension, qe_level: IsvLevel
) -> _Tcb:
    """The (checked) TCB info is for this platform: the platform's TCB level, the status it
    gives with the TDX module's and the QE's levels, and why it is not UpToDate."""
    info = collateral.tcb_info
    if info.id != quote.tee:
        raise QuoteVerificationError(
            "tcb_info", f"TCB info is for {info.id!r}, the quote is {quote.tee}"
        )
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
    module = tdx_module(info, td) if td is not None else None
    sgx_level, level = match_levels(info, extension, td)
    status = level.status
    qe_svn = quote.certification.qe_report.isv_svn
    # (level, what, that component's levels, its SVN): the module's, then the QE's.
    components = [(qe_level, "QE", collateral.qe_identity.levels, qe_svn)]
    if td is not None and module is not None and module.identity and module.level:
        status = converge(status, module.level.status)
        if td.tee_tcb_svn2 is not None:
            status = td_relaunch(
                info, td, sgx_status=sgx_level.status, tdx_status=status,
                module_status=module.level.status, qe_status=qe_level.status,
            )  # fmt: skip
        name = f"TDX module {module.identity.id}"
        components.insert(0, (module.level, name, module.identity.levels, td.tee_tcb_svn[0]))
    status = converge(status, qe_level.status)
    advisories = list(level.advisory_ids)
    for component, _name, _levels, _svn in components:
        advisories += [a for a in component.advisory_ids if a not in advisories]
    shortfalls: tuple[str, ...] = ()
    if status != "UpToDate":
        shortfalls = platform_shortfalls(info, extension, td, level)
        for component, name, levels, svn in components:
            if component.status != "UpToDate":
                shortfalls += isv_shortfall(levels, svn, name)
    return _Tcb(status, tuple(advisories), level.tcb_date, shortfalls)


def _apply_policy_naming_qe(
    result: VerifiedQuote, policy: VerificationPolicy, qe_status: str, qe_isv_svn: int
) -> None:
    """``apply_policy``, but a refusal the quoting enclave's own level caused says so, since
    blaming the platform's TCB would send an operator to the wrong fix."""
    qe_level = f"QE ISVSVN {qe_isv_svn} is at a {qe_status} level of the QE identity"
    if qe_status == "Revoked":
        raise PolicyRejected("tcb_status", f"{qe_level}, which is never accepted", result)
    try:
        apply_policy(result, policy)
    except PolicyRejected as exc:
        if exc.check != "tcb_status" or qe_status == "UpToDate":
            raise
        raise PolicyRejected(exc.check, f"{exc}; {qe_level}", result) from exc


def apply_policy(result: VerifiedQuote, policy: VerificationPolicy) -> None:
    """Refuse what ``policy`` does not accept, in this order: a Revoked TCB, collateral of an
    older TCB evaluation, the TCB status, an advisory, a TD open to #VE injection, debug."""
    if result.tcb_status == "Revoked":
        raise PolicyRejected("tcb_status", "the platform's TCB is Revoked", result)
    minimum = policy.min_tcb_evaluation_data_number
    for piece, number in (
        ("TCB info", result.tcb_info_evaluation_data_number),
        ("QE identity", result.qe_identity_evaluation_data_number),
    ):
        if number < minimum:
            raise PolicyRejected(
                "tcb_evaluation_data_number",
                f"the {piece} is of TCB evaluation {number} (tcbEvaluationDataNumber), "
                f"older than the policy's minimum {minimum}",
                result,
            )
    if result.tcb_status not in policy.allowed_tcb_statuses:
        why = f"; {'; '.join(result.shortfalls)}" if result.shortfalls else ""
        raise PolicyRejected(
            "tcb_status",
            f"TCB status {result.tcb_status} is not allowed (allowed: {', '.join(sorted(policy.allowed_tcb_statuses))}; "
            f"advisories: {', '.join(result.advisory_ids) or 'none'}){why}",
            result,
        )
    allowed = policy.allowed_advisories
    refused = [a for a in result.advisory_ids if allowed is not None and a not in allowed]
    if refused:
        raise PolicyRejected(
            "advisory",
            f"advisor{'ies' if len(refused) > 1 else 'y'} {', '.join(refused)} "
            f"not allowed by the policy (allowed: {', '.join(sorted(allowed or ())) or 'none'})",
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
