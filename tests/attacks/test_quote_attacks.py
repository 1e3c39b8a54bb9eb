"""Attack catalogue, quotes and collateral: one test per attack, each asserting the typed
error and that its message names what was wrong.

Where a mutation suffices the attack runs on the real Intel-signed SGX sample, verified as
of a time inside its collateral window; where the attacker must re-sign something it runs
on the simulated platform, whose keys the test holds. The table in docs/attacks.md lists
each attack with the check that stops it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import PolicyRejected, QuoteFormatError, QuoteVerificationError
from teaclave_ma.attestation.pki import verify_chain
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import parse_quote, pck_certificates
from teaclave_ma.attestation.sim import pki as sim_pki
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.sim.signing import raw_public_key, sign_raw
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.attestation.verifier import VerifiedQuote, verify_quote
from teaclave_ma.identity import SgxIdentity
from tests.attestation.conftest import (
    SAMPLE_TIME,
    edit_collateral,
    reissued_crl,
    renamed_platform,
    with_attestation_key,
)
from tests.attestation.test_verify import (
    ANY_STATUS,
    IDENTITY,
    QE_REPORT,
    QUOTE_BODY,
    REPORT_DATA,
    SIGNATURE_DATA,
    anchor_of,
    flip,
    now,
    resign,
    verify_simulated,
)

Change = Callable[[dict[str, str]], None]


@pytest.fixture(scope="module")
def sim() -> SimulatedPlatform:
    return SimulatedPlatform.create()


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> tuple[bytes, bytes]:
    """The real SGX quote and its collateral (verified as of SAMPLE_TIME)."""
    sgx = shared_data / "sgx"
    return (sgx / "quote.bin").read_bytes(), (sgx / "collateral.json").read_bytes()


def verify_sample(quote: bytes, collateral: Collateral) -> VerifiedQuote:
    """Every TCB status allowed, so that only the attacked check can refuse."""
    return verify_quote(quote, collateral, SAMPLE_TIME, ANY_STATUS)


def pem_chain(platform: SimulatedPlatform, *roles: str) -> str:
    """The platform's certificates of these roles, as a collateral issuer chain."""
    return "".join(
        platform.certs[role].public_bytes(serialization.Encoding.PEM).decode() for role in roles
    )


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the quote itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [SIGNATURE_DATA + 5, QUOTE_BODY + 320],
    ids=["signature-bytes", "signed-report-data"],
)
def test_quote_signature_tampered(sample: tuple[bytes, bytes], offset: int) -> None:
    quote, collateral = sample
    with pytest.raises(QuoteVerificationError) as caught:
        verify_sample(flip(quote, offset), Collateral.from_json(collateral))
    assert caught.value.check == "quote_signature"
    assert "quote signature does not verify under the attestation key" in str(caught.value)


def test_qe_report_tampered(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    with pytest.raises(QuoteVerificationError) as caught:
        verify_sample(flip(quote, QE_REPORT + 64), Collateral.from_json(collateral))  # QE MRENCLAVE
    assert caught.value.check == "qe_report_signature"
    assert "QE report signature does not verify under the PCK key" in str(caught.value)


def test_attestation_key_swapped(sim: SimulatedPlatform) -> None:
    """The quote is validly signed, by a key the QE report does not certify."""
    stranger = sim_pki.new_key()
    swapped = with_attestation_key(sim, stranger)
    qe = sim.quoting_enclaves["SGX"]
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(
            swapped.quote(IDENTITY, REPORT_DATA),
            Collateral.from_json(sim.collateral_json()),
            now(),
            VerificationPolicy(),
            anchor_of(sim),
        )
    assert caught.value.check == "qe_report_data"
    expected = hashlib.sha256(raw_public_key(stranger) + qe.auth_data).hexdigest()
    certified = qe.report[320:352].hex()  # report_data[:32] of the QE report
    assert f"expected {expected}, got {certified}" in str(caught.value)


@pytest.fixture(scope="module")
def lookalike(sample: tuple[bytes, bytes]) -> SimulatedPlatform:
    """A PKI of the attacker's own keys under exactly the names of Intel's certificates."""
    intel = pck_certificates(parse_quote(sample[0]).certification.pck_chain_pem)
    tcb_signing = Collateral.from_json(sample[1]).tcb_info_issuer_chain[0]
    return renamed_platform(
        SimulatedPlatform.create(now=SAMPLE_TIME),
        {
            "pck": intel[0].subject,
            "platform_ca": intel[1].subject,
            "root": intel[-1].subject,
            "tcb_signing": tcb_signing.subject,
        },
    )


def _refusal_of_lookalike(sample: tuple[bytes, bytes], lookalike: SimulatedPlatform) -> str:
    quote = lookalike.quote(IDENTITY, REPORT_DATA)
    chain = pck_certificates(parse_quote(quote).certification.pck_chain_pem)
    # The forged chain is internally sound: only the root's key tells it from Intel's.
    verify_chain(chain, anchor_of(lookalike), SAMPLE_TIME, "pck_chain")
    with pytest.raises(QuoteVerificationError) as caught:
        verify_sample(quote, Collateral.from_json(sample[1]))
    assert caught.value.check == "pck_chain"
    return str(caught.value)


def test_pck_chain_to_a_lookalike_root(
    sample: tuple[bytes, bytes], lookalike: SimulatedPlatform
) -> None:
    message = _refusal_of_lookalike(sample, lookalike)
    assert "chains to 'Intel SGX Root CA' (SHA-256 " in message
    assert "which is not the trusted root 'Intel SGX Root CA'" in message


def test_pck_chain_to_a_lookalike_root_names_both_fingerprints(
    sample: tuple[bytes, bytes], lookalike: SimulatedPlatform
) -> None:
    message = _refusal_of_lookalike(sample, lookalike)
    assert hashlib.sha256(lookalike.root_certificate_der).hexdigest() in message
    assert INTEL_SGX_ROOT_CA.root_sha256.hex() in message


@pytest.mark.parametrize("what", ["tcb_info", "qe_identity"])
def test_collateral_chain_to_a_lookalike_root(
    sample: tuple[bytes, bytes], lookalike: SimulatedPlatform, what: str
) -> None:
    """A genuine quote, with TCB info or QE identity signed by the look-alike TCB signer."""
    quote, collateral = sample

    def change(document: dict[str, str]) -> None:
        document[f"{what}_issuer_chain"] = pem_chain(lookalike, "tcb_signing", "root")
        document[f"{what}_signature"] = sign_raw(
            lookalike.keys["tcb_signing"], document[what].encode()
        ).hex()

    with pytest.raises(QuoteVerificationError) as caught:
        verify_sample(quote, edit_collateral(collateral, change))
    assert caught.value.check == f"{what}_chain"
    assert "chains to 'Intel SGX Root CA' (SHA-256 " in str(caught.value)


def test_simulated_root_in_production_mode(sim: SimulatedPlatform) -> None:
    quote = sim.quote(IDENTITY, REPORT_DATA)
    collateral = Collateral.from_json(sim.collateral_json())
    moment = now()
    # Accepted where the simulated root is trusted first, so that nothing remembered from
    # that success may carry over to the production verifier.
    verify_quote(quote, collateral, moment, VerificationPolicy(), anchor_of(sim))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(quote, collateral, moment, VerificationPolicy())  # Intel's root: the default
    assert caught.value.check == "simulated_root"
    message = str(caught.value)
    assert f"simulated root ({sim_pki.ROOT_CN!r}), not to Intel SGX Root CA" in message
    assert "explicit opt-in" in message


def test_debug_enclave_refused_by_policy(sim: SimulatedPlatform) -> None:
    debug = SgxIdentity(IDENTITY.mr_enclave, IDENTITY.mr_signer, 7, 3, debug=True)
    with pytest.raises(PolicyRejected) as caught:
        verify_quote(
            sim.quote(debug, REPORT_DATA),
            Collateral.from_json(sim.collateral_json()),
            now(),
            VerificationPolicy(),
            anchor_of(sim),
        )
    assert caught.value.check == "debug"
    assert "the SGX report is from a debug enclave" in str(caught.value)


def _grow_signature_data(quote: bytes) -> bytes:
    """One byte appended inside the signature data, its length field raised to cover it."""
    (length,) = struct.unpack_from("<I", quote, SIGNATURE_DATA - 4)
    return (
        quote[: SIGNATURE_DATA - 4]
        + struct.pack("<I", length + 1)
        + quote[SIGNATURE_DATA:]
        + b"\x01"
    )


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (
            lambda q: q + b"\x01",
            "signature_data_length",
            "1 trailing bytes after the signature data",
        ),
        (_grow_signature_data, "signature_data", "1 unexpected trailing bytes"),
    ],
    ids=["after-the-quote", "inside-signature-data"],
)
def test_quote_with_trailing_garbage(
    sample: tuple[bytes, bytes], mutate: Callable[[bytes], bytes], field: str, fragment: str
) -> None:
    quote, collateral = sample
    with pytest.raises(QuoteFormatError) as caught:
        verify_sample(mutate(quote), Collateral.from_json(collateral))
    assert caught.value.field == field
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("cut", "field", "fragment"),
    [
        (40, "header.user_data", "needs 20 bytes at offset 28, only 12 left"),
        (300, "report_body", "needs 384 bytes at offset 48, only 252 left"),
        (-1, "signature_data", "at offset 436"),
    ],
    ids=["in-header", "in-body", "last-byte"],
)
def test_truncated_quote(sample: tuple[bytes, bytes], cut: int, field: str, fragment: str) -> None:
    quote, collateral = sample
    with pytest.raises(QuoteFormatError) as caught:
        verify_sample(quote[:cut], Collateral.from_json(collateral))
    assert caught.value.field == field
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("offset", "value", "field", "fragment"),
    [
        (0, 2, "header.version", "unsupported quote version 2 at offset 0 (supported: 3, 4, 5)"),
        (2, 3, "header.attestation_key_type", "unsupported attestation key type 3 at offset 2"),
    ],
    ids=["version", "attestation-key-type"],
)
def test_unsupported_version_or_attestation_key_type(
    sample: tuple[bytes, bytes], offset: int, value: int, field: str, fragment: str
) -> None:
    quote, collateral = sample
    mutated = quote[:offset] + struct.pack("<H", value) + quote[offset + 2 :]
    with pytest.raises(QuoteFormatError) as caught:
        verify_sample(mutated, Collateral.from_json(collateral))
    assert caught.value.field == field
    assert fragment in str(caught.value)


# -- PKI: revocation --------------------------------------------------------------------------


def _current_crl(platform: SimulatedPlatform, issuer: str, revoked: list[int]) -> str:
    start = now() - dt.timedelta(hours=1)
    return reissued_crl(
        platform, issuer, revoked, this_update=start, next_update=start + dt.timedelta(days=1)
    )


def test_revoked_pck(sim: SimulatedPlatform) -> None:
    pck = sim.certs["pck"]

    def change(document: dict[str, str]) -> None:
        document["pck_crl"] = _current_crl(sim, "platform_ca", [pck.serial_number])

    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == "revoked"
    assert f"{sim_pki.PCK_CN!r} (serial {pck.serial_number:x}) is revoked" in str(caught.value)


@pytest.mark.parametrize(
    ("role", "name"),
    [("platform_ca", sim_pki.PLATFORM_CA_CN), ("tcb_signing", sim_pki.TCB_SIGNING_CN)],
)
def test_revoked_intermediate(sim: SimulatedPlatform, role: str, name: str) -> None:
    """A certificate the root issued, listed on the root CA CRL."""
    serial = sim.certs[role].serial_number

    def change(document: dict[str, str]) -> None:
        document["root_ca_crl"] = _current_crl(sim, "root", [serial])

    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == "revoked"
    assert f"{name!r} (serial {serial:x}) is revoked" in str(caught.value)


def test_pck_crl_of_another_ca(sample: tuple[bytes, bytes], shared_data: Path) -> None:
    """Mix and match to hide a revocation: a genuine, current PCK CRL of Intel's Platform
    CA, for a PCK that Intel's Processor CA issued."""
    quote, collateral = sample
    tdx = json.loads((shared_data / "tdx" / "collateral.json").read_bytes())

    def change(document: dict[str, str]) -> None:
        document["pck_crl"] = tdx["pck_crl"]

    with pytest.raises(QuoteVerificationError) as caught:
        verify_sample(quote, edit_collateral(collateral, change))
    assert caught.value.check == "pck_crl"
    assert "Intel SGX PCK Platform CA" in str(caught.value)  # the CRL's real issuer
    assert "is not signed by 'Intel SGX PCK Processor CA'" in str(caught.value)


# -- collateral validity ----------------------------------------------------------------------

# Each item of collateral with its own window, the check naming it and how it names itself.
ITEMS = {
    "tcb_info": ("tcb_info_validity", "TCB info is not current"),
    "qe_identity": ("qe_identity_validity", "QE identity is not current"),
    "root_ca_crl": ("root_ca_crl_validity", f"CRL of {sim_pki.ROOT_CN!r} is not current"),
    "pck_crl": ("pck_crl_validity", f"CRL of {sim_pki.PLATFORM_CA_CN!r} is not current"),
}
CRL_ISSUERS = {"root_ca_crl": "root", "pck_crl": "platform_ca"}


def _with_window(
    platform: SimulatedPlatform, item: str, issued: dt.datetime, next_update: dt.datetime
) -> Collateral:
    """The platform's collateral with one item re-issued (and re-signed) for another window."""
    if item in CRL_ISSUERS:

        def change(document: dict[str, str]) -> None:
            document[item] = reissued_crl(
                platform, CRL_ISSUERS[item], this_update=issued, next_update=next_update
            )

        return edit_collateral(platform.collateral_json(), change)
    window = {"issueDate": stamp(issued), "nextUpdate": stamp(next_update)}
    return edit_collateral(
        platform.collateral_json(), resign(platform, item, lambda body: body.update(window))
    )


@pytest.mark.parametrize("item", ITEMS)
def test_expired_collateral(sim: SimulatedPlatform, item: str) -> None:
    """nextUpdate has passed."""
    moment = now().replace(microsecond=0)
    collateral = _with_window(
        sim, item, moment - dt.timedelta(days=31), moment - dt.timedelta(days=1)
    )
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=collateral)
    check, fragment = ITEMS[item]
    assert caught.value.check == check
    assert fragment in str(caught.value)
    # the passed nextUpdate (CRL messages print it in another time format: match the day)
    assert f"next update {(moment - dt.timedelta(days=1)):%Y-%m-%d}" in str(caught.value)


@pytest.mark.parametrize("item", ITEMS)
def test_not_yet_valid_collateral(sim: SimulatedPlatform, item: str) -> None:
    """issueDate (a CRL's thisUpdate) is in the future."""
    moment = now().replace(microsecond=0)
    collateral = _with_window(
        sim, item, moment + dt.timedelta(days=1), moment + dt.timedelta(days=30)
    )
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=collateral)
    check, fragment = ITEMS[item]
    assert caught.value.check == check
    assert fragment in str(caught.value)
    assert stamp(moment + dt.timedelta(days=1)) in str(caught.value)


@pytest.fixture(scope="module")
def aged() -> tuple[SimulatedPlatform, dt.datetime]:
    """A platform set up three days before the returned moment, so that one item of its
    collateral can be re-issued for a window (the day before to the day after) that the
    rest of its evidence outlasts on both sides."""
    moment = now().replace(microsecond=0)
    return SimulatedPlatform.create(now=moment - dt.timedelta(days=3)), moment


@pytest.mark.parametrize("item", ITEMS)
@pytest.mark.parametrize(
    "shift", [dt.timedelta(days=2), dt.timedelta(days=-2)], ids=["expired", "not-yet-valid"]
)
def test_collateral_accepted_once_is_checked_again_at_another_time(
    aged: tuple[SimulatedPlatform, dt.datetime], item: str, shift: dt.timedelta
) -> None:
    """The same quote and collateral objects, accepted at one time, offered again after
    (or before) one item's window: nothing remembered from the success (parsed or verified
    chains and collateral) may outlive any item's validity."""
    platform, moment = aged
    quote = parse_quote(platform.quote(IDENTITY, REPORT_DATA))
    day = dt.timedelta(days=1)
    collateral = _with_window(platform, item, moment - day, moment + day)
    verify_quote(quote, collateral, moment, VerificationPolicy(), anchor_of(platform))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(quote, collateral, moment + shift, VerificationPolicy(), anchor_of(platform))
    check, fragment = ITEMS[item]
    assert caught.value.check == check
    assert fragment.replace("not current", f"not current at {stamp(moment + shift)}") in str(
        caught.value
    )


# -- TCB status and policy --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "policy", "fragment"),
    [
        (
            "OutOfDate",
            VerificationPolicy(),
            "TCB status OutOfDate is not allowed (allowed: UpToDate;",
        ),
        (
            "ConfigurationNeeded",
            VerificationPolicy().allow_status("SWHardeningNeeded"),
            "TCB status ConfigurationNeeded is not allowed (allowed: SWHardeningNeeded, UpToDate;",
        ),
        ("Revoked", ANY_STATUS, "the platform's TCB is Revoked"),
    ],
    ids=["OutOfDate", "ConfigurationNeeded-without-opt-in", "Revoked-even-when-all-allowed"],
)
def test_tcb_status_not_allowed_by_policy(
    status: str, policy: VerificationPolicy, fragment: str
) -> None:
    platform = SimulatedPlatform.create(tcb_status=status)
    with pytest.raises(PolicyRejected) as caught:
        verify_quote(
            platform.quote(IDENTITY, REPORT_DATA),
            Collateral.from_json(platform.collateral_json()),
            now(),
            policy,
            anchor_of(platform),
        )
    assert caught.value.check == "tcb_status"
    assert fragment in str(caught.value)
    assert caught.value.report.tcb_status == status  # type: ignore[attr-defined]


# -- signed collateral ------------------------------------------------------------------------


def _flip_hex(field: str) -> Change:
    def change(document: dict[str, str]) -> None:
        raw = bytes.fromhex(document[field])
        document[field] = flip(raw, 10).hex()

    return change


def _respace(field: str) -> Change:
    """The signed JSON text changed without changing what it says."""

    def change(document: dict[str, str]) -> None:
        document[field] = document[field].replace('"version":', '"version": ', 1)

    return change


@pytest.mark.parametrize("what", ["tcb_info", "qe_identity"])
@pytest.mark.parametrize(
    ("tamper", "suffix"), [(_flip_hex, "_signature"), (_respace, "")], ids=["signature", "text"]
)
def test_collateral_signature_tampered(
    sample: tuple[bytes, bytes], what: str, tamper: Callable[[str], Change], suffix: str
) -> None:
    """TCB info or QE identity signature tampered (the signature, or the text it covers)."""
    quote, collateral = sample
    mutated = edit_collateral(collateral, tamper(what + suffix))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_sample(quote, mutated)
    assert caught.value.check == f"{what}_signature"
    assert f"{what} is not signed by 'Intel SGX TCB Signing'" in str(caught.value)


@pytest.mark.parametrize("what", ["tcb_info", "qe_identity"])
@pytest.mark.parametrize(
    ("signer", "name"), [("platform_ca", sim_pki.PLATFORM_CA_CN), ("pck", sim_pki.PCK_CN)]
)
def test_collateral_signed_by_a_cert_that_is_not_the_tcb_signing_cert(
    sim: SimulatedPlatform, what: str, signer: str, name: str
) -> None:
    """Signed by the platform CA, or by a (leaked) PCK key: chained to the right root, but
    not the TCB signer."""
    issuers = ("pck", "platform_ca", "root") if signer == "pck" else ("platform_ca", "root")

    def change(document: dict[str, str]) -> None:
        document[f"{what}_issuer_chain"] = pem_chain(sim, *issuers)
        document[f"{what}_signature"] = sign_raw(sim.keys[signer], document[what].encode()).hex()

    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == f"{what}_chain"
    assert f"{what} is signed by {name!r}, not a TCB signing certificate" in str(caught.value)


# -- collateral that does not fit the platform or its quoting enclave -------------------------


def test_tcb_info_for_another_fmspc(sim: SimulatedPlatform) -> None:
    fmspc = bytes.fromhex(sim.settings["fmspc"])
    other = bytes(b ^ 0xFF for b in fmspc)
    change = resign(sim, "tcb_info", lambda body: body.update(fmspc=other.hex().upper()))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == "fmspc"
    assert f"PCK FMSPC {fmspc.hex()} differs from TCB info FMSPC {other.hex()}" in str(caught.value)


def test_tcb_info_for_another_pce_id(sim: SimulatedPlatform) -> None:
    change = resign(sim, "tcb_info", lambda body: body.update(pceId="0100"))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == "pce_id"
    assert "PCK PCE id 0000 differs from TCB info 0100" in str(caught.value)


def _take_from_tdx(shared_data: Path, item: str) -> Change:
    """Mix and match: one genuinely Intel-signed item of the TDX sample's collateral."""
    tdx = json.loads((shared_data / "tdx" / "collateral.json").read_bytes())

    def change(document: dict[str, str]) -> None:
        for field in (item, f"{item}_signature", f"{item}_issuer_chain"):
            document[field] = tdx[field]

    return change


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("tcb_info", "TCB info is for 'TDX', the quote is SGX"),
        ("qe_identity", "QE identity is for 'TD_QE', a SGX quote needs 'QE'"),
    ],
)
def test_genuine_collateral_of_another_tee(
    sample: tuple[bytes, bytes], shared_data: Path, item: str, fragment: str
) -> None:
    quote, collateral = sample
    with pytest.raises(QuoteVerificationError) as caught:
        verify_sample(quote, edit_collateral(collateral, _take_from_tdx(shared_data, item)))
    assert caught.value.check == item
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("mrsigner", "AB" * 32, "QE mrsigner {qe_mrsigner} is not " + "ab" * 32),
        ("isvprodid", 9, "QE isvprodid 1 is not 9"),
    ],
)
def test_qe_identity_mismatch(
    sim: SimulatedPlatform, field: str, value: object, fragment: str
) -> None:
    change = resign(sim, "qe_identity", lambda body: body.update({field: value}))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == "qe_identity"
    assert fragment.format(qe_mrsigner=sim.settings["qe_mr_signer"]["SGX"]) in str(caught.value)


def _qe_levels(*levels: tuple[int, str]) -> Callable[[dict[str, object]], None]:
    return lambda body: body.update(
        tcbLevels=[
            {"tcb": {"isvsvn": svn}, "tcbDate": "2025-01-01T00:00:00Z", "tcbStatus": status}
            for svn, status in levels
        ]
    )


def test_qe_isvsvn_below_every_level(sim: SimulatedPlatform) -> None:
    """The QE identity no longer lists the QE's ISVSVN: treated as revoked."""
    change = resign(sim, "qe_identity", _qe_levels((99, "UpToDate")))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == "tcb_level"
    assert "QE SVN 8 is below every TCB level (treated as revoked)" in str(caught.value)


def _refusal_of_revoked_qe(sim: SimulatedPlatform) -> QuoteVerificationError:
    change = resign(sim, "qe_identity", _qe_levels((99, "UpToDate"), (8, "Revoked")))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    return caught.value


def test_qe_isvsvn_at_a_revoked_level(sim: SimulatedPlatform) -> None:
    """The QE identity lists the QE's ISVSVN as Revoked."""
    error = _refusal_of_revoked_qe(sim)
    assert isinstance(error, PolicyRejected)
    assert error.check == "tcb_status"
    assert "Revoked" in str(error)


def test_qe_isvsvn_at_a_revoked_level_is_named(sim: SimulatedPlatform) -> None:
    assert "QE ISVSVN 8" in str(_refusal_of_revoked_qe(sim))


def test_qe_isvsvn_at_an_out_of_date_level_is_named(sim: SimulatedPlatform) -> None:
    """An OutOfDate QE lowers the whole status; the refusal says the QE caused it."""
    change = resign(sim, "qe_identity", _qe_levels((99, "UpToDate"), (8, "OutOfDate")))
    with pytest.raises(PolicyRejected) as caught:
        verify_simulated(sim, collateral=edit_collateral(sim.collateral_json(), change))
    assert caught.value.check == "tcb_status"
    assert "TCB status OutOfDate is not allowed" in str(caught.value)
    assert "QE ISVSVN 8 is at a OutOfDate level of the QE identity" in str(caught.value)


# -- issue 16: the TDX module and collateral freshness ----------------------------------------


def test_a_td_on_a_tdx_module_intel_did_not_sign(sim: SimulatedPlatform) -> None:
    """The host runs the TD on a TDX 1.0 module of its own (MRSIGNERSEAM not Intel's zero):
    the quote is genuinely signed by the TD QE, but the module is not the TCB info's."""
    quote = sim.td_quote(simulated_td_identity(IDENTITY), REPORT_DATA, mr_signer_seam=b"\xee" * 48)
    collateral = Collateral.from_json(sim.collateral_json("TDX"))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(quote, collateral, now(), ANY_STATUS, anchor_of(sim))
    assert caught.value.check == "tdx_module"
    assert f"MRSIGNERSEAM {'ee' * 48} is not the TCB info's tdxModule mrsigner" in str(caught.value)


def test_collateral_from_before_a_tcb_recovery(sim: SimulatedPlatform) -> None:
    """The host serves genuine collateral of an older TCB evaluation that is still inside its
    validity window, so that a platform a TCB recovery made OutOfDate still looks UpToDate."""
    older = resign(sim, "tcb_info", lambda body: body.update(tcbEvaluationDataNumber=1))
    policy = VerificationPolicy(min_tcb_evaluation_data_number=2)
    with pytest.raises(PolicyRejected) as caught:
        verify_quote(
            sim.quote(IDENTITY, REPORT_DATA), edit_collateral(sim.collateral_json(), older),
            now(), policy, anchor_of(sim),
        )  # fmt: skip
    assert caught.value.check == "tcb_evaluation_data_number"
    assert "TCB info is of TCB evaluation 1" in str(caught.value)
    assert "older than the policy's minimum 2" in str(caught.value)
