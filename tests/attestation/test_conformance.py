"""Conformance with Intel's quote verification library (issue 16).

Each test builds its case under the simulated PKI (re-signing TCB info and QE identities
with the platform's TCB signing key) and asserts the verdict Intel's QVL gives; the comment
names the QVL source the rule comes from (intel/SGX-TDX-DCAP-QuoteVerificationLibrary,
Src/...). Where dcap-qvl agrees too, tests/attestation/test_differential.py says so.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from teaclave_ma.attestation.collateral import Collateral, parse_tcb_info
from teaclave_ma.attestation.errors import CollateralError, PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.sim.collateral import SIM_ADVISORY
from teaclave_ma.attestation.sim.platform import (
    PLATFORM_COMPONENTS,
    PLATFORM_PCE_SVN,
    TDX_COMPONENTS,
    QuotingEnclave,
    SimulatedPlatform,
)
from teaclave_ma.attestation.sim.signing import sign_raw
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.attestation.verifier import VerifiedQuote, verify_quote
from tests.attestation.conftest import SAMPLE_TIME
from tests.attestation.test_verify import (
    ANY_STATUS,
    IDENTITY,
    REPORT_DATA,
    anchor_of,
    now,
    resign,
)

Edit = Callable[[dict[str, Any]], None]
TD_IDENTITY = simulated_td_identity(IDENTITY)
ZEROS = [0] * 16


@pytest.fixture(scope="module")
def sim() -> SimulatedPlatform:
    return SimulatedPlatform.create()


def collateral_of(platform: SimulatedPlatform, tee: str = "SGX", **edits: Edit) -> Collateral:
    """The platform's collateral for ``tee``, its TCB info and QE identity edited (by field
    name: tcb_info=..., qe_identity=...) and re-signed with the TCB signing key."""
    fields = json.loads(platform.collateral_json(tee))
    for field, edit in edits.items():
        resign(platform, field, edit)(fields)
    return Collateral.from_json(json.dumps(fields))


def verify(
    platform: SimulatedPlatform,
    collateral: Collateral,
    quote: bytes | None = None,
    policy: VerificationPolicy = ANY_STATUS,
) -> VerifiedQuote:
    quote = quote if quote is not None else platform.quote(IDENTITY, REPORT_DATA)
    return verify_quote(quote, collateral, now(), policy, anchor_of(platform))


def level(
    sgx: list[int], pce: int, status: str, tdx: list[int] | None = None, date: str = "2025-01-01"
) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": s} for s in sgx], "pcesvn": pce}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": s} for s in tdx]
    return {"tcb": tcb, "tcbDate": f"{date}T00:00:00Z", "tcbStatus": status}


def levels(*items: dict[str, Any]) -> Edit:
    return lambda body: body.update(tcbLevels=list(items))


PLATFORM = list(PLATFORM_COMPONENTS)
ABOVE = [svn + 1 for svn in PLATFORM]


# -- 3. TCB levels in Intel's order, duplicates refused ---------------------------------------


def test_levels_are_matched_in_intels_order_not_json_order(sim: SimulatedPlatform) -> None:
    """TcbInfo.cpp keeps levels in a std::set ordered by TcbLevel::operator> (SGX
    components, then PCESVN, highest first), and TcbLevelCheck.cpp takes the first one the
    platform reaches: the platform's own OutOfDate level, not the lower UpToDate one that
    the JSON happens to list first. Intel: OutOfDate."""
    edit = levels(level(ZEROS, 0, "UpToDate"), level(PLATFORM, PLATFORM_PCE_SVN, "OutOfDate"))
    assert verify(sim, collateral_of(sim, tcb_info=edit)).tcb_status == "OutOfDate"


def test_pcesvn_orders_levels_of_equal_components(sim: SimulatedPlatform) -> None:
    """Equal SGX components: the higher PCESVN first (TcbLevel::operator>). Intel: OutOfDate."""
    edit = levels(level(PLATFORM, 0, "UpToDate"), level(PLATFORM, PLATFORM_PCE_SVN, "OutOfDate"))
    assert verify(sim, collateral_of(sim, tcb_info=edit)).tcb_status == "OutOfDate"


def test_tdx_components_order_tdx_levels_of_equal_sgx_tcb(sim: SimulatedPlatform) -> None:
    """In TDX TCB info the TDX components break the tie (TcbLevel::operator>, id TDX).
    Intel: OutOfDate, the level of the TD's own TDX components."""
    edit = levels(
        level(PLATFORM, PLATFORM_PCE_SVN, "UpToDate", ZEROS),
        level(PLATFORM, PLATFORM_PCE_SVN, "OutOfDate", list(TDX_COMPONENTS)),
    )
    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA)
    result = verify(sim, collateral_of(sim, "TDX", tcb_info=edit), quote)
    assert result.tcb_status == "OutOfDate"


def test_a_level_listed_twice_is_refused(sim: SimulatedPlatform) -> None:
    """TcbInfo.cpp: "Detected duplicated TCB levels" when the set refuses an insertion, so
    one TCB with two statuses cannot be read either way. Intel: the TCB info is invalid."""
    edit = levels(
        level(PLATFORM, PLATFORM_PCE_SVN, "UpToDate"),
        level(ZEROS, 0, "OutOfDate"),
        level(PLATFORM, PLATFORM_PCE_SVN, "Revoked"),
    )
    with pytest.raises(CollateralError) as caught:
        collateral_of(sim, tcb_info=edit)
    assert caught.value.field == "tcb_info.tcbLevels[2]"
    assert "the same TCB as tcbLevels[0] (UpToDate and Revoked)" in str(caught.value)


def test_levels_are_sorted_once_when_parsed(sgx_collateral: bytes) -> None:
    info = Collateral.from_json(sgx_collateral).tcb_info
    keys = [(lvl.sgx_components, lvl.pce_svn) for lvl in info.levels]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == len(keys)


# -- 2. QE identity miscselect is little-endian; the identity's value is not masked -----------


def qe_with_misc_select(platform: SimulatedPlatform, misc_select: int) -> SimulatedPlatform:
    """``platform`` whose SGX QE reports ``misc_select`` (its report re-signed by the PCK)."""
    qe = platform.quoting_enclaves["SGX"]
    report = qe.report[:16] + struct.pack("<I", misc_select) + qe.report[20:]
    forged = QuotingEnclave(report, sign_raw(platform.keys["pck"], report), qe.auth_data)
    return attrs.evolve(platform, quoting_enclaves={**platform.quoting_enclaves, "SGX": forged})


@pytest.mark.parametrize(("miscselect", "accepted"), [("01000000", True), ("00000001", False)])
def test_qe_miscselect_is_read_little_endian(
    sim: SimulatedPlatform, miscselect: str, accepted: bool
) -> None:
    """EnclaveReportVerifier.cpp reads the identity's miscselect bytes with
    vectorToUint32, which swaps them: "01000000" is MISCSELECT 1. Intel: a QE with
    MISCSELECT=1 matches "01000000" and not "00000001"."""
    platform = qe_with_misc_select(sim, 1)
    collateral = collateral_of(platform, qe_identity=lambda b: b.update(miscselect=miscselect))
    if accepted:
        assert verify(platform, collateral).tcb_status == "UpToDate"
        return
    with pytest.raises(QuoteVerificationError) as caught:
        verify(platform, collateral)
    assert caught.value.check == "qe_identity"
    assert "QE miscselect 00000001 under the mask ffffffff is not the QE identity's 01000000" in (
        str(caught.value)
    )


def test_qe_identity_bits_outside_its_own_mask_are_not_ignored(sim: SimulatedPlatform) -> None:
    """EnclaveReportVerifier.cpp compares (report & mask) with the identity's value as it
    is: an identity asking for a bit its mask drops matches no QE. Intel: QE identity
    mismatch (dcap-qvl masks both sides and accepts)."""
    collateral = collateral_of(
        sim, qe_identity=lambda b: b.update(miscselect="01000000", miscselectMask="FEFFFFFF")
    )
    with pytest.raises(QuoteVerificationError, match="QE miscselect 00000000") as caught:
        verify(qe_with_misc_select(sim, 1), collateral)
    assert caught.value.check == "qe_identity"


# -- 5. statuses each structure may carry ----------------------------------------------------


def qe_levels(*items: tuple[int, str]) -> Edit:
    return lambda body: body.update(
        tcbLevels=[
            {"tcb": {"isvsvn": svn}, "tcbDate": "2025-01-01T00:00:00Z", "tcbStatus": status}
            for svn, status in items
        ]
    )


def test_a_qe_level_status_intel_does_not_know_is_refused(sim: SimulatedPlatform) -> None:
    """EnclaveIdentityV2.cpp parseTcbLevels: parseStringToTcbStatus knows UpToDate,
    ConfigurationNeeded, OutOfDate, OutOfDateConfigurationNeeded and Revoked only. Intel:
    unsupported QE identity format."""
    with pytest.raises(CollateralError) as caught:
        collateral_of(sim, qe_identity=qe_levels((8, "SWHardeningNeeded")))
    assert caught.value.field == "qe_identity.tcbLevels[0].tcbStatus"
    assert "'SWHardeningNeeded' is not a status this structure may carry" in str(caught.value)


def test_a_qe_level_other_than_up_to_date_or_revoked_counts_as_out_of_date(
    sim: SimulatedPlatform,
) -> None:
    """EnclaveReportVerifier.cpp 4.1.2.9.10: a QE level that is neither UpToDate nor
    Revoked gives ISVSVN_OUT_OF_DATE, which lowers an UpToDate platform to OutOfDate
    (convergeTcbStatusWithQeTcbStatus). Intel: OutOfDate."""
    collateral = collateral_of(sim, qe_identity=qe_levels((8, "ConfigurationNeeded")))
    assert verify(sim, collateral).tcb_status == "OutOfDate"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("tcb_info.tcbLevels[0].tcbStatus", "Fine"),
        ("tcb_info.tcbLevels[0].tcbStatus", "TDRelaunchAdvised"),
    ],
)
def test_a_tcb_level_status_intel_does_not_know_is_refused(
    sim: SimulatedPlatform, path: str, status: str
) -> None:
    """TcbLevel.cpp parseTcbLevelCommon accepts the seven TCB level statuses only; the
    relaunch advice is a verdict, never a level's. Intel: the TCB info is invalid."""
    edit = levels(level(PLATFORM, PLATFORM_PCE_SVN, status))
    with pytest.raises(CollateralError, match=f"'{status}' is not a status") as caught:
        collateral_of(sim, tcb_info=edit)
    assert caught.value.field == path


# -- 1 and 4. the TDX module, for every TDX quote --------------------------------------------

MODULE_SIGNER = "00" * 48


def module_identity(
    name: str, *items: tuple[int, str], mrsigner: str = MODULE_SIGNER
) -> dict[str, Any]:
    return {
        "id": name,
        "mrsigner": mrsigner,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [
            {"tcb": {"isvsvn": svn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status}
            for svn, status in items
        ],
    }


def with_modules(*identities: dict[str, Any]) -> Edit:
    return lambda body: body.update(tdxModuleIdentities=list(identities))


def module_svn(isvsvn: int, version: int) -> bytes:
    """TEE_TCB_SVN of a TD on module ``version`` at ``isvsvn``, the platform's TDX TCB."""
    return bytes([isvsvn, version, *TDX_COMPONENTS[2:]])


def test_a_tdx_1_0_module_signed_by_anyone_else_is_refused(sim: SimulatedPlatform) -> None:
    """QuoteVerifier.cpp 4.1.2.4.11.1 checks MRSIGNERSEAM against tcbInfo.tdxModule for a
    TDX 1.0 module (TEE_TCB_SVN[1] = 0) too; dcap-qvl does the same. Intel:
    STATUS_TDX_MODULE_MISMATCH."""
    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA, mr_signer_seam=b"\x5a" * 48)
    with pytest.raises(QuoteVerificationError) as caught:
        verify(sim, collateral_of(sim, "TDX"), quote)
    assert caught.value.check == "tdx_module"
    assert f"MRSIGNERSEAM {'5a' * 48} is not the TCB info's tdxModule mrsigner {'00' * 48}" in str(
        caught.value
    )


def test_seam_attributes_must_be_zero(sim: SimulatedPlatform) -> None:
    """QuoteVerifier.cpp 4.1.2.4.11.2: every SEAMATTRIBUTES byte must be zero and equal to
    the expected attributes. Intel: STATUS_TDX_MODULE_MISMATCH."""
    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA, seam_attributes=b"\x01" + bytes(7))
    with pytest.raises(QuoteVerificationError, match="SEAMATTRIBUTES 0100000000000000") as caught:
        verify(sim, collateral_of(sim, "TDX"), quote)
    assert caught.value.check == "tdx_module"


def test_a_module_identity_is_found_whatever_the_case_of_its_id(sim: SimulatedPlatform) -> None:
    """TdxModuleCheck.cpp findTdxModuleIdentity upper-cases each id before comparing it
    with "TDX_03". Intel: the identity is used, here UpToDate."""
    collateral = collateral_of(
        sim, "TDX", tcb_info=with_modules(module_identity("tdx_03", (3, "UpToDate")))
    )
    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA, tee_tcb_svn=module_svn(3, 3))
    assert verify(sim, collateral, quote).tcb_status == "UpToDate"


def test_a_module_version_without_an_identity_is_refused(sim: SimulatedPlatform) -> None:
    """QuoteVerifier.cpp 4.1.2.4.11: TEE_TCB_SVN[1] > 0 needs the TDX_NN identity. Intel:
    STATUS_TDX_MODULE_MISMATCH."""
    collateral = collateral_of(
        sim, "TDX", tcb_info=with_modules(module_identity("TDX_01", (3, "UpToDate")))
    )
    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA, tee_tcb_svn=module_svn(3, 3))
    with pytest.raises(QuoteVerificationError, match="no identity for TDX module TDX_03"):
        verify(sim, collateral, quote)


def test_the_module_identitys_signer_replaces_tdx_module(sim: SimulatedPlatform) -> None:
    """With a module identity, its mrsigner is the one MRSIGNERSEAM must equal
    (QuoteVerifier.cpp: "can be overwritten by value from TDX Module Identity")."""
    identity = module_identity("TDX_03", (3, "UpToDate"), mrsigner="77" * 48)
    collateral = collateral_of(sim, "TDX", tcb_info=with_modules(identity))
    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA, tee_tcb_svn=module_svn(3, 3))
    with pytest.raises(QuoteVerificationError, match="module identity TDX_03 mrsigner 7777"):
        verify(sim, collateral, quote)


def test_a_module_level_status_intel_does_not_know_is_refused(sim: SimulatedPlatform) -> None:
    """TcbStatus.h VALID_MODULE_TCB_STATUSES: UpToDate, OutOfDate, Revoked. Intel refuses a
    matched level with any other status (TCB_UNRECOGNIZED_STATUS); we refuse such TCB info
    whichever level carries it."""
    with pytest.raises(CollateralError, match="'SWHardeningNeeded' is not a status") as caught:
        collateral_of(
            sim, "TDX", tcb_info=with_modules(module_identity("TDX_03", (3, "SWHardeningNeeded")))
        )
    assert caught.value.field == "tcb_info.tdxModuleIdentities[0].tcbLevels[0].tcbStatus"


def test_module_levels_are_sorted_and_duplicates_refused(sim: SimulatedPlatform) -> None:
    """TdxModuleIdentity.cpp: a set ordered by isvsvn, highest first; a duplicate is
    refused. Out of JSON order, isvsvn 5 is at the UpToDate level of 4, not at the
    OutOfDate level of 2 listed first. Intel: UpToDate."""
    unsorted = module_identity("TDX_03", (2, "OutOfDate"), (4, "UpToDate"))
    collateral = collateral_of(sim, "TDX", tcb_info=with_modules(unsorted))
    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA, tee_tcb_svn=module_svn(5, 3))
    assert verify(sim, collateral, quote).tcb_status == "UpToDate"
    twice = module_identity("TDX_03", (4, "UpToDate"), (4, "Revoked"))
    with pytest.raises(CollateralError, match="isvsvn 4 is listed twice"):
        collateral_of(sim, "TDX", tcb_info=with_modules(twice))


# -- 6. TD 1.5 relaunch advice ---------------------------------------------------------------

RELAUNCH_MODULE = module_identity("TDX_03", (4, "UpToDate"), (2, "OutOfDate"))


def relaunch_collateral(sim: SimulatedPlatform, status: str = "UpToDate") -> Collateral:
    """TDX TCB info with one TCB level of ``status`` and module TDX_03, OutOfDate below 4."""
    edit = levels(level(PLATFORM, PLATFORM_PCE_SVN, status, list(TDX_COMPONENTS)))

    def tcb_info(body: dict[str, Any]) -> None:
        edit(body)
        with_modules(RELAUNCH_MODULE)(body)

    return collateral_of(sim, "TDX", tcb_info=tcb_info)


def relaunch_quote(sim: SimulatedPlatform, svn2: bytes) -> bytes:
    """A TD 1.5 on module TDX_03 at isvsvn 2 whose TEE_TCB_SVN2 is ``svn2``."""
    return sim.td_quote(
        TD_IDENTITY, REPORT_DATA, v5=True, tee_tcb_svn=module_svn(2, 3), tee_tcb_svn2=svn2
    )


@pytest.mark.parametrize(
    ("status", "svn2", "verdict"),
    [
        ("UpToDate", module_svn(4, 3), "TDRelaunchAdvised"),
        ("ConfigurationNeeded", module_svn(4, 3), "TDRelaunchAdvisedConfigurationNeeded"),
        ("UpToDate", module_svn(2, 3), "OutOfDate"),  # the platform was not updated either
        ("UpToDate", bytes(TDX_COMPONENTS), "TDRelaunchAdvised"),  # SVN2[1] = 0
    ],
    ids=["updated", "updated-configuration-needed", "not-updated", "svn2-without-module-version"],
)
def test_td_relaunch_advice(sim: SimulatedPlatform, status: str, svn2: bytes, verdict: str) -> None:
    """TDRelaunchCheck.cpp (4.1.2.4.17.4.3): a TD 1.5 whose module level is OutOfDate, on a
    platform whose latest TCB its TEE_TCB_SVN2 already reaches (the module isvsvn of the
    highest module level, or with SVN2[1] = 0 the first TDX component of the highest TCB
    level, and component 2), is advised to relaunch; configuration needed is kept."""
    result = verify(sim, relaunch_collateral(sim, status), relaunch_quote(sim, svn2))
    assert result.tcb_status == verdict


def test_relaunch_advice_is_refused_unless_allowed(sim: SimulatedPlatform) -> None:
    quote, collateral = relaunch_quote(sim, module_svn(4, 3)), relaunch_collateral(sim)
    with pytest.raises(PolicyRejected, match="TCB status TDRelaunchAdvised is not allowed"):
        verify(sim, collateral, quote, VerificationPolicy())
    allowed = VerificationPolicy().allow_status("TDRelaunchAdvised")
    assert verify(sim, collateral, quote, allowed).tcb_status == "TDRelaunchAdvised"


# -- 7. which advisories are reported ---------------------------------------------------------


def test_advisories_of_the_platform_module_and_qe_are_reported(sim: SimulatedPlatform) -> None:
    """Intel's QvE puts the platform level's advisories only in its supplemental data;
    we report the QE's and the module's too (docs/verification.md says why), as dcap-qvl."""
    qe_level = {
        "tcb": {"isvsvn": 8},
        "tcbDate": "2025-01-01T00:00:00Z",
        "tcbStatus": "OutOfDate",
        "advisoryIDs": ["INTEL-SA-QE"],
    }
    result = verify(sim, collateral_of(sim, qe_identity=lambda b: b.update(tcbLevels=[qe_level])))
    assert (result.tcb_status, result.advisory_ids) == ("OutOfDate", ("INTEL-SA-QE",))


# -- TCB freshness and advisory policy ---------------------------------------------------------


def evaluation(number: int) -> Edit:
    return lambda body: body.update(tcbEvaluationDataNumber=number)


def test_collateral_of_an_older_tcb_evaluation_is_refused(sim: SimulatedPlatform) -> None:
    collateral = collateral_of(sim, tcb_info=evaluation(17), qe_identity=evaluation(16))
    result = verify(sim, collateral)
    assert (result.tcb_info_evaluation_data_number, result.tcb_evaluation_data_number) == (17, 16)
    fresh = VerificationPolicy(min_tcb_evaluation_data_number=16)
    assert verify(sim, collateral, policy=fresh).tcb_status == "UpToDate"
    with pytest.raises(PolicyRejected) as caught:
        verify(sim, collateral, policy=VerificationPolicy(min_tcb_evaluation_data_number=17))
    assert caught.value.check == "tcb_evaluation_data_number"
    assert (
        "the QE identity is of TCB evaluation 16 (tcbEvaluationDataNumber), older than the policy's minimum 17"
        in str(caught.value)
    )
    with pytest.raises(PolicyRejected, match="the TCB info is of TCB evaluation 17"):
        verify(sim, collateral, policy=VerificationPolicy(min_tcb_evaluation_data_number=18))


def test_a_minimum_evaluation_number_must_be_a_natural_number() -> None:
    with pytest.raises(Exception, match="expected an integer >= 0"):
        VerificationPolicy(min_tcb_evaluation_data_number=-1)


def test_only_allowed_advisories_pass() -> None:
    platform = SimulatedPlatform.create(tcb_status="SWHardeningNeeded")
    collateral = Collateral.from_json(platform.collateral_json())
    base = VerificationPolicy().allow_status("SWHardeningNeeded")
    assert verify(platform, collateral, policy=base).advisory_ids == (SIM_ADVISORY,)
    listed = attrs.evolve(base, allowed_advisories={SIM_ADVISORY})
    assert verify(platform, collateral, policy=listed).tcb_status == "SWHardeningNeeded"
    with pytest.raises(PolicyRejected) as caught:
        verify(platform, collateral, policy=attrs.evolve(base, allowed_advisories={"INTEL-SA-1"}))
    assert caught.value.check == "advisory"
    assert f"advisory {SIM_ADVISORY} not allowed by the policy (allowed: INTEL-SA-1)" in str(
        caught.value
    )


# -- every verdict says how fresh its collateral was and why it is not UpToDate ---------------


def test_verdicts_carry_dates_and_evaluation_numbers(
    sgx_quote: bytes, sgx_collateral: bytes
) -> None:
    result = verify_quote(sgx_quote, Collateral.from_json(sgx_collateral), SAMPLE_TIME, ANY_STATUS)
    assert result.tcb_evaluation_data_number == 17
    assert result.tcb_date == dt.datetime(2024, 3, 13, tzinfo=dt.UTC)
    assert result.qe_tcb_date == dt.datetime(2024, 3, 13, tzinfo=dt.UTC)
    # No level of this TCB info is UpToDate; the highest needs what the platform lacks.
    assert result.shortfalls == (
        "sgxtcbcomp07 is 0; the SWHardeningNeeded level of 2024-03-13 needs 12",
    )


def test_a_refusal_names_each_component_below_the_up_to_date_level() -> None:
    platform = SimulatedPlatform.create(tcb_status="OutOfDate")
    with pytest.raises(PolicyRejected) as caught:
        verify(
            platform, Collateral.from_json(platform.collateral_json()), policy=VerificationPolicy()
        )
    message = str(caught.value)
    assert "sgxtcbcomp03 is 3; the UpToDate level of 2026-06-01 needs 4" in message
    assert f"pcesvn is {PLATFORM_PCE_SVN}; the UpToDate level of 2026-06-01 needs 14" in message


def test_a_platform_below_every_level_is_told_what_the_lowest_needs(sim: SimulatedPlatform) -> None:
    edit = levels(level(ABOVE, PLATFORM_PCE_SVN, "UpToDate"))
    with pytest.raises(QuoteVerificationError) as caught:
        verify(sim, collateral_of(sim, tcb_info=edit))
    assert caught.value.check == "tcb_level"
    assert "sgxtcbcomp01 is 5; the UpToDate level of 2025-01-01 needs 6" in str(caught.value)


def test_tdx_components_and_the_module_are_named(sim: SimulatedPlatform) -> None:
    higher_tdx = [*TDX_COMPONENTS[:2], TDX_COMPONENTS[2] + 1, *TDX_COMPONENTS[3:]]
    edit = levels(
        level(PLATFORM, PLATFORM_PCE_SVN, "UpToDate", higher_tdx, "2024-03-13"),
        level(PLATFORM, PLATFORM_PCE_SVN, "OutOfDate", list(TDX_COMPONENTS)),
    )

    def tcb_info(body: dict[str, Any]) -> None:
        edit(body)
        with_modules(RELAUNCH_MODULE)(body)

    quote = sim.td_quote(TD_IDENTITY, REPORT_DATA, tee_tcb_svn=module_svn(2, 3))
    result = verify(sim, collateral_of(sim, "TDX", tcb_info=tcb_info), quote)
    assert result.tcb_status == "OutOfDate"
    assert result.shortfalls == (
        "tdxtcbcomp03 is 3; the UpToDate level of 2024-03-13 needs 4",
        "TDX module TDX_03 isvsvn is 2; its UpToDate level of 2024-03-13 needs 4",
    )


def test_tcb_info_parses_to_the_same_view_whatever_its_level_order(tdx_collateral: bytes) -> None:
    document = json.loads(json.loads(tdx_collateral)["tcb_info"])
    reversed_order = dict(document, tcbLevels=document["tcbLevels"][::-1])
    assert parse_tcb_info(json.dumps(reversed_order).encode()).levels == (
        parse_tcb_info(json.dumps(document).encode()).levels
    )
