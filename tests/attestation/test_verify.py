"""verify_quote on real evidence, and every check failing on a crafted input."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import attrs
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import CollateralError, PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.pki import verify_crl
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.sim import pki
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.sim.signing import sign_raw
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.attestation.verifier import clear_caches, verify_quote
from teaclave_ma.attestation.x509_load import load_der_crl
from teaclave_ma.errors import ConfigError
from teaclave_ma.formats import der
from teaclave_ma.identity import SgxIdentity
from tests.attestation.conftest import SAMPLE_TIME

IDENTITY = SgxIdentity(b"\x11" * 32, b"\x22" * 32, isv_prod_id=7, isv_svn=3, debug=False)
REPORT_DATA = bytes(range(64))
ANY_STATUS = VerificationPolicy.permissive_tcb()


def anchor_of(platform: SimulatedPlatform) -> TrustAnchor:
    return TrustAnchor.for_root(platform.root_certificate_der, "test root", simulated=True)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def verify_simulated(
    platform: SimulatedPlatform, *, collateral: Collateral | None = None
) -> object:
    """Verify a fresh quote of IDENTITY from ``platform`` under its own root, now."""
    return verify_quote(
        platform.quote(IDENTITY, REPORT_DATA),
        collateral or Collateral.from_json(platform.collateral_json()),
        now(),
        VerificationPolicy(),
        anchor_of(platform),
    )


# -- real evidence ------------------------------------------------------------------------


def test_real_sgx_quote_verifies_under_intel_root(sgx_quote: bytes, sgx_collateral: bytes) -> None:
    result = verify_quote(sgx_quote, Collateral.from_json(sgx_collateral), SAMPLE_TIME, ANY_STATUS)
    assert result.anchor == INTEL_SGX_ROOT_CA
    assert result.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert result.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert result.identity is not None and not result.identity.debug
    assert result.report_data.startswith(b"Hello, world!")
    assert result.evidence_expires == dt.datetime(2025, 7, 19, 10, 1, 18, tzinfo=dt.UTC)


def test_real_tdx_quote_verifies_up_to_date(tdx_quote: bytes, tdx_collateral: bytes) -> None:
    result = verify_quote(
        tdx_quote, Collateral.from_json(tdx_collateral), SAMPLE_TIME, VerificationPolicy()
    )
    assert (result.tee, result.tcb_status, result.advisory_ids) == ("TDX", "UpToDate", ())
    assert result.identity is None


def test_default_policy_refuses_the_real_sgx_quote_but_reports_its_status(
    sgx_quote: bytes, sgx_collateral: bytes
) -> None:
    with pytest.raises(PolicyRejected) as caught:
        verify_quote(
            sgx_quote, Collateral.from_json(sgx_collateral), SAMPLE_TIME, VerificationPolicy()
        )
    assert caught.value.check == "tcb_status"
    assert caught.value.report.tcb_status == "ConfigurationAndSWHardeningNeeded"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("moment", "check"),
    [
        (dt.datetime(2025, 7, 25, tzinfo=dt.UTC), "root_ca_crl_validity"),
        (dt.datetime(2025, 6, 1, tzinfo=dt.UTC), "pck_crl_validity"),
    ],
)
def test_real_collateral_outside_its_window_is_refused(
    sgx_quote: bytes, sgx_collateral: bytes, moment: dt.datetime, check: str
) -> None:
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(sgx_quote, Collateral.from_json(sgx_collateral), moment, ANY_STATUS)
    assert caught.value.check.endswith("_validity")


# -- the simulated platform through the same code path ------------------------------------


def test_simulated_quote_verifies_only_when_its_root_is_trusted(
    platform: SimulatedPlatform,
) -> None:
    quote = platform.quote(IDENTITY, REPORT_DATA)
    collateral = Collateral.from_json(platform.collateral_json())
    result = verify_quote(quote, collateral, now(), VerificationPolicy(), anchor_of(platform))
    assert result.identity == IDENTITY
    assert result.report_data == REPORT_DATA
    with pytest.raises(QuoteVerificationError) as production:
        verify_quote(quote, collateral, now(), VerificationPolicy())
    assert production.value.check == "simulated_root"
    assert "simulated root" in str(production.value)


def test_another_platforms_root_is_refused(platform: SimulatedPlatform) -> None:
    other = SimulatedPlatform.create()
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(
            platform.quote(IDENTITY, REPORT_DATA),
            Collateral.from_json(platform.collateral_json()),
            now(),
            VerificationPolicy(),
            anchor_of(other),
        )
    assert caught.value.check == "pck_chain"


@pytest.mark.parametrize(
    "status",
    [
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    ],
)
def test_every_tcb_status_is_reported_and_refused_unless_allowed(status: str) -> None:
    platform = SimulatedPlatform.create(tcb_status=status)
    quote = platform.quote(IDENTITY, REPORT_DATA)
    collateral = Collateral.from_json(platform.collateral_json())
    with pytest.raises(PolicyRejected) as caught:
        verify_quote(quote, collateral, now(), VerificationPolicy(), anchor_of(platform))
    assert caught.value.report.tcb_status == status  # type: ignore[attr-defined]
    allowed = verify_quote(
        quote, collateral, now(), VerificationPolicy().allow_status(status), anchor_of(platform)
    )
    assert allowed.tcb_status == status
    assert allowed.advisory_ids == ("TEACLAVE-SIM-SA-0001",)


def test_revoked_tcb_is_refused_and_can_never_be_allowed() -> None:
    platform = SimulatedPlatform.create(tcb_status="Revoked")
    with pytest.raises(PolicyRejected, match="Revoked"):
        verify_quote(
            platform.quote(IDENTITY, REPORT_DATA),
            Collateral.from_json(platform.collateral_json()),
            now(),
            ANY_STATUS,
            anchor_of(platform),
        )
    with pytest.raises(ConfigError, match="Revoked can never be allowed"):
        VerificationPolicy().allow_status("Revoked")


def test_debug_enclave_refused_unless_allowed(platform: SimulatedPlatform) -> None:
    debug_identity = SgxIdentity(IDENTITY.mr_enclave, IDENTITY.mr_signer, 7, 3, debug=True)
    quote = platform.quote(debug_identity, REPORT_DATA)
    collateral = Collateral.from_json(platform.collateral_json())
    with pytest.raises(PolicyRejected) as caught:
        verify_quote(quote, collateral, now(), VerificationPolicy(), anchor_of(platform))
    assert caught.value.check == "debug"
    allowed = verify_quote(
        quote, collateral, now(), VerificationPolicy(allow_debug=True), anchor_of(platform)
    )
    assert allowed.identity is not None and allowed.identity.debug


def test_revoked_pck_certificate_is_refused() -> None:
    platform = SimulatedPlatform.create()
    platform.revoke_pck()
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(platform)
    assert caught.value.check == "revoked"
    assert "PCK Certificate" in str(caught.value)


@pytest.mark.parametrize(
    ("shift", "check"),
    [(dt.timedelta(days=45), "_validity"), (dt.timedelta(days=-2), "_validity")],
    ids=["expired", "not-yet-valid"],
)
def test_collateral_outside_its_validity_is_refused(
    platform: SimulatedPlatform, shift: dt.timedelta, check: str
) -> None:
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(
            platform.quote(IDENTITY, REPORT_DATA),
            Collateral.from_json(platform.collateral_json()),
            now() + shift,
            VerificationPolicy(),
            anchor_of(platform),
        )
    assert caught.value.check.endswith(check)


# -- tampering with the quote ---------------------------------------------------------------

QUOTE_BODY = 48
SIGNATURE_DATA = 48 + 384 + 4
ATTESTATION_KEY = SIGNATURE_DATA + 64
QE_REPORT = ATTESTATION_KEY + 64
QE_REPORT_SIGNATURE = QE_REPORT + 384
QE_AUTH_DATA = QE_REPORT_SIGNATURE + 64 + 2


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


@pytest.mark.parametrize(
    ("offset", "check"),
    [
        (QUOTE_BODY + 64, "quote_signature"),  # mr_enclave
        (QUOTE_BODY + 320, "quote_signature"),  # report_data
        (SIGNATURE_DATA + 5, "quote_signature"),  # the quote signature itself
        (ATTESTATION_KEY + 10, "qe_report_data"),  # a swapped attestation key
        (QE_REPORT + 64, "qe_report_signature"),  # QE report tampered
        (QE_REPORT_SIGNATURE + 3, "qe_report_signature"),
        (QE_AUTH_DATA + 1, "qe_report_data"),
    ],
)
def test_tampered_quote_regions_are_refused(
    platform: SimulatedPlatform, offset: int, check: str
) -> None:
    quote = flip(platform.quote(IDENTITY, REPORT_DATA), offset)
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(
            quote,
            Collateral.from_json(platform.collateral_json()),
            now(),
            VerificationPolicy(),
            anchor_of(platform),
        )
    assert caught.value.check == check


# -- tampering with collateral ----------------------------------------------------------------


def edited(platform: SimulatedPlatform, change: Callable[[dict[str, str]], None]) -> Collateral:
    document = json.loads(platform.collateral_json())
    change(document)
    return Collateral.from_json(json.dumps(document))


def resign(
    platform: SimulatedPlatform, field: str, edit: Callable[[dict[str, object]], None]
) -> Callable[[dict[str, str]], None]:
    def change(document: dict[str, str]) -> None:
        body = json.loads(document[field])
        edit(body)
        text = json.dumps(body, separators=(",", ":")).encode()
        document[field] = text.decode()
        document[f"{field}_signature"] = sign_raw(platform.keys["tcb_signing"], text).hex()

    return change


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (
            lambda d: d.update(tcb_info=d["tcb_info"].replace('"tcbType":0', '"tcbType":0 ')),
            "tcb_info_signature",
        ),
        (
            lambda d: d.update(
                qe_identity=d["qe_identity"].replace('"isvprodid":1', '"isvprodid":1 ')
            ),
            "qe_identity_signature",
        ),
    ],
    ids=["tcb-info-signature", "qe-identity-signature"],
)
def test_collateral_signatures_cover_the_exact_bytes(
    platform: SimulatedPlatform, change: Callable[[dict[str, str]], None], check: str
) -> None:
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(platform, collateral=edited(platform, change))
    assert caught.value.check == check


@pytest.mark.parametrize(
    ("field", "edit", "check"),
    [
        ("tcb_info", lambda b: b.update(fmspc="FFFFFFFFFFFF"), "fmspc"),
        ("tcb_info", lambda b: b.update(pceId="0100"), "pce_id"),
        ("qe_identity", lambda b: b.update(mrsigner="AB" * 32), "qe_identity"),
        ("qe_identity", lambda b: b.update(isvprodid=9), "qe_identity"),
        ("qe_identity", lambda b: b.update(id="TD_QE"), "qe_identity"),
        (
            "qe_identity",
            lambda b: b.update(
                tcbLevels=[
                    {
                        "tcb": {"isvsvn": 99},
                        "tcbDate": "2025-01-01T00:00:00Z",
                        "tcbStatus": "UpToDate",
                    }
                ]
            ),
            "tcb_level",
        ),
    ],
)
def test_collateral_content_must_match_the_platform(
    platform: SimulatedPlatform, field: str, edit: Callable[[dict[str, object]], None], check: str
) -> None:
    collateral = edited(platform, resign(platform, field, edit))
    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(platform, collateral=collateral)
    assert caught.value.check == check


def test_pck_crl_must_be_signed_by_the_pck_issuer(platform: SimulatedPlatform) -> None:
    stranger = pki.new_key()
    start = now() - dt.timedelta(hours=1)
    forged = pki.crl(
        platform.certs["platform_ca"],
        stranger,
        [],
        this_update=start,
        next_update=start + dt.timedelta(days=1),
    )

    def change(document: dict[str, str]) -> None:
        document["pck_crl"] = forged.public_bytes(serialization.Encoding.DER).hex()

    with pytest.raises(QuoteVerificationError) as caught:
        verify_simulated(platform, collateral=edited(platform, change))
    assert caught.value.check == "pck_crl"


def test_tcb_info_for_another_tee_is_refused(platform: SimulatedPlatform) -> None:
    def tdx_tcb_info(document: dict[str, str]) -> None:
        tdx = json.loads(platform.collateral_json("TDX"))
        document.update(tcb_info=tdx["tcb_info"], tcb_info_signature=tdx["tcb_info_signature"])

    with pytest.raises(QuoteVerificationError, match="TCB info is for 'TDX'") as caught:
        verify_simulated(platform, collateral=edited(platform, tdx_tcb_info))
    assert caught.value.check == "tcb_info"
    # Relabelled, SGX TCB info is not even TDX TCB info (TcbInfo.cpp: no tdxModule).
    with pytest.raises(CollateralError, match=r"tcb_info\.tdxModule"):
        edited(platform, resign(platform, "tcb_info", lambda b: b.update(id="TDX")))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda b: b.update(miscselect="00000001"), "miscselect"),
        (lambda b: b.update(attributes="13000000000000000000000000000000"), "attributes"),
    ],
)
def test_qe_identity_masks_are_applied(
    platform: SimulatedPlatform, edit: Callable[[dict[str, object]], None], fragment: str
) -> None:
    collateral = edited(platform, resign(platform, "qe_identity", edit))
    with pytest.raises(QuoteVerificationError, match=fragment) as caught:
        verify_simulated(platform, collateral=collateral)
    assert caught.value.check == "qe_identity"


def test_an_issuer_that_is_not_a_ca_is_refused() -> None:
    platform = SimulatedPlatform.create()
    start = now() - dt.timedelta(hours=1)
    platform.certs["platform_ca"] = pki.issue(
        pki.PLATFORM_CA_CN, platform.keys["platform_ca"], platform.certs["root"], platform.keys["root"],
        ca=False, not_before=start, not_after=start + dt.timedelta(days=1),
    )  # fmt: skip
    with pytest.raises(QuoteVerificationError, match="is not a CA certificate"):
        verify_simulated(platform)


def test_an_intermediate_revoked_by_the_root_is_refused(platform: SimulatedPlatform) -> None:
    start = now() - dt.timedelta(hours=1)
    revoking = pki.crl(
        platform.certs["root"], platform.keys["root"], [platform.certs["platform_ca"].serial_number],
        this_update=start, next_update=start + dt.timedelta(days=1),
    )  # fmt: skip

    def change(document: dict[str, str]) -> None:
        document["root_ca_crl"] = revoking.public_bytes(serialization.Encoding.DER).hex()

    with pytest.raises(QuoteVerificationError, match="PCK Platform CA") as caught:
        verify_simulated(platform, collateral=edited(platform, change))
    assert caught.value.check == "revoked"


def test_gramine_style_opt_ins() -> None:
    assert VerificationPolicy.from_gramine_env({}) == VerificationPolicy()
    policy = VerificationPolicy.from_gramine_env(
        {"RA_TLS_ALLOW_OUTDATED_TCB_INSECURE": "1", "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": "1"}
    )
    assert policy.allowed_tcb_statuses == {"UpToDate", "OutOfDate", "OutOfDateConfigurationNeeded"}
    assert policy.allow_debug
    both = VerificationPolicy.from_gramine_env(
        {"RA_TLS_ALLOW_HW_CONFIG_NEEDED": "1", "RA_TLS_ALLOW_SW_HARDENING_NEEDED": "1"}
    )
    assert "ConfigurationAndSWHardeningNeeded" in both.allowed_tcb_statuses
    assert "OutOfDate" not in both.allowed_tcb_statuses
    with pytest.raises(ConfigError, match="unknown TCB status"):
        VerificationPolicy(allowed_tcb_statuses=frozenset({"Fine"}))


def test_a_td_without_sept_ve_disable_is_refused(platform: SimulatedPlatform) -> None:
    secure = simulated_td_identity(IDENTITY)
    exposed = attrs.evolve(secure, td_attributes=bytes(8))
    collateral = Collateral.from_json(platform.collateral_json("TDX"))
    assert (
        verify_quote(
            platform.td_quote(secure, REPORT_DATA),
            collateral,
            now(),
            VerificationPolicy(),
            anchor_of(platform),
        ).tee
        == "TDX"
    )
    with pytest.raises(PolicyRejected) as caught:
        verify_quote(
            platform.td_quote(exposed, REPORT_DATA),
            collateral,
            now(),
            VerificationPolicy(),
            anchor_of(platform),
        )
    assert caught.value.check == "td_attributes"


def test_tdx_quote_needs_tdx_collateral(platform: SimulatedPlatform) -> None:
    quote = platform.td_quote(simulated_td_identity(IDENTITY), REPORT_DATA)
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(
            quote,
            Collateral.from_json(platform.collateral_json("SGX")),
            now(),
            VerificationPolicy(),
            anchor_of(platform),
        )
    assert caught.value.check == "qe_identity"  # the SGX QE's identity does not fit the TD QE


def test_collateral_signed_by_a_non_tcb_signing_certificate_is_refused(
    platform: SimulatedPlatform,
) -> None:
    """The platform CA is issued by the same root, but it must not vouch for TCB info."""

    def change(document: dict[str, str]) -> None:
        document["tcb_info_issuer_chain"] = document["pck_crl_issuer_chain"]
        document["tcb_info_signature"] = sign_raw(
            platform.keys["platform_ca"], document["tcb_info"].encode()
        ).hex()

    with pytest.raises(QuoteVerificationError, match="not a TCB signing certificate") as caught:
        verify_simulated(platform, collateral=edited(platform, change))
    assert caught.value.check == "tcb_info_chain"


def test_collateral_is_parsed_once_per_distinct_bytes(sgx_collateral: bytes) -> None:
    clear_caches()
    first = Collateral.from_json(sgx_collateral)
    assert Collateral.from_json(sgx_collateral) is first
    assert Collateral.from_json(sgx_collateral.decode()) is first
    other = json.loads(sgx_collateral)
    other["qe_identity_signature"] = "00" * 64
    assert Collateral.from_json(json.dumps(other)) is not first


def test_a_signed_crl_without_next_update_is_refused() -> None:
    """RFC 5280 makes nextUpdate optional; a verifier could never tell such a CRL is stale."""
    key = pki.new_key()
    moment = now()
    ca = pki.issue(
        "CRL issuer", key, None, key, ca=True,
        not_before=moment - dt.timedelta(days=1), not_after=moment + dt.timedelta(days=1),
    )  # fmt: skip
    algorithm = der.encode_sequence(der.encode_oid("1.2.840.10045.4.3.2"))  # ECDSA-SHA256
    this_update = der.encode_tlv(0x17, f"{moment - dt.timedelta(hours=1):%y%m%d%H%M%SZ}".encode())
    tbs = der.encode_sequence(algorithm, ca.subject.public_bytes(), this_update)
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    crl_der = der.encode_sequence(
        tbs, algorithm, der.encode_tlv(der.TAG_BIT_STRING, b"\x00" + signature)
    )
    crl = load_der_crl(crl_der, "root_ca_crl", CollateralError)
    assert crl.next_update_utc is None
    with pytest.raises(QuoteVerificationError, match="has no next update") as caught:
        verify_crl(crl, crl_der, ca, moment, "root_ca_crl")
    assert caught.value.check == "root_ca_crl_validity"
