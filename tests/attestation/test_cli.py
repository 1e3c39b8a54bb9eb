from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA
from teaclave_ma.attestation.sim.platform import SimulatedPlatform, SimulatedPlatformError
from teaclave_ma.cli.main import main
from teaclave_ma.identity import SgxIdentity
from tests.helpers import run_cli

IDENTITY = SgxIdentity(b"\x42" * 32, b"\x43" * 32, isv_prod_id=1, isv_svn=1, debug=False)


def test_quote_show_prints_identity_fields(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = run_cli(capsys, "quote", "show", str(shared_data / "sgx" / "quote.bin"), "--json")
    assert code == 0
    assert data["tee"] == "SGX"
    assert data["mr_enclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert data["fmspc"] == "00a067110000"
    assert str(data["report_data"]).startswith(b"Hello, world!".hex())
    # which root it chains to, to hold against the root an image trusts (`measure`)
    assert data["root_sha256"] == INTEL_SGX_ROOT_CA.root_sha256.hex()
    assert data["root_is_intel"] is True


def test_quote_show_names_a_simulated_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = SimulatedPlatform.create()
    quote = tmp_path / "quote.bin"
    quote.write_bytes(platform.quote(IDENTITY, bytes(64)))
    code, data = run_cli(capsys, "quote", "show", str(quote), "--json")
    assert code == 0
    assert data["root_sha256"] == hashlib.sha256(platform.root_certificate_der).hexdigest()
    assert data["root_is_intel"] is False


def test_quote_verify_real_sample_json(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quote = str(shared_data / "sgx" / "quote.bin")
    collateral = str(shared_data / "sgx" / "collateral.json")
    code, data = run_cli(
        capsys,
        "quote",
        "verify",
        quote,
        "--collateral",
        collateral,
        "--at",
        "2025-07-01T00:00:00Z",
        "--json",
    )
    assert code == 1  # the default policy accepts UpToDate only
    assert data["verified"] is False
    assert data["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert data["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    code, data = run_cli(
        capsys, "quote", "verify", quote, "--collateral", collateral, "--at", "2025-07-01T00:00:00Z",
        "--allow-status", "ConfigurationAndSWHardeningNeeded", "--json",
    )  # fmt: skip
    assert code == 0
    assert data["verified"] is True
    assert data["mr_signer"] == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"


def test_quote_verify_tdx_sample(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_cli(
        capsys, "quote", "verify", str(shared_data / "tdx" / "quote.bin"),
        "--collateral", str(shared_data / "tdx" / "collateral.json"), "--at", "2025-07-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert code == 0
    assert (data["tcb_status"], data["tee"]) == ("UpToDate", "TDX")
    assert len(str(data["mr_td"])) == 96


def test_unusable_quote_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x03\x00" + b"\x00" * 30)
    assert main(["quote", "show", str(bad)]) == 2
    assert "header" in capsys.readouterr().err


def test_simulated_root_needs_the_explicit_opt_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "init", str(tmp_path / "sim")]) == 0
    assert "SIMULATED" in capsys.readouterr().err
    quote = tmp_path / "q.bin"
    assert main([
        "sim", "quote", str(tmp_path / "sim"), "--mr-enclave", "ab" * 32, "--mr-signer", "cd" * 32, "--out", str(quote),
    ]) == 0  # fmt: skip
    collateral = str(tmp_path / "sim" / "collateral.json")
    root = str(tmp_path / "sim" / "root.der")
    code, data = run_cli(
        capsys, "quote", "verify", str(quote), "--collateral", collateral, "--json"
    )
    assert code == 1
    assert "simulated_root" in str(data["reasons"])
    assert main(["quote", "verify", str(quote), "--collateral", collateral, "--root", root]) == 2
    assert "UNUSABLE" in capsys.readouterr().out
    code, data = run_cli(
        capsys,
        "quote",
        "verify",
        str(quote),
        "--collateral",
        collateral,
        "--root",
        root,
        "--trust-simulated-root",
        "--json",
    )
    assert code == 0
    assert data["mr_enclave"] == "ab" * 32


def test_simulated_platform_round_trips_and_refuses_a_broken_directory(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create()
    platform.save(tmp_path / "p")
    assert (tmp_path / "p" / "platform.json").stat().st_mode & 0o777 == 0o600
    loaded = SimulatedPlatform.load(tmp_path / "p")
    assert loaded.root_certificate_der == platform.root_certificate_der
    with pytest.raises(SimulatedPlatformError, match="no simulated platform"):
        SimulatedPlatform.load(tmp_path / "missing")
    (tmp_path / "p" / "platform.json").write_text('{"settings": {}}')
    with pytest.raises(SimulatedPlatformError, match="corrupt"):
        SimulatedPlatform.load(tmp_path / "p")


def _verify_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code, data = run_cli(capsys, "quote", "verify", *argv, "--json")
    assert data, "--json printed no JSON object"
    return code, data


def test_quote_verify_json_reports_unusable_input_as_one_object(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every outcome is one JSON object; the exit code still says which it was."""
    good_quote = str(shared_data / "sgx" / "quote.bin")
    good_collateral = str(shared_data / "sgx" / "collateral.json")
    bad_quote, bad_collateral = tmp_path / "bad.bin", tmp_path / "bad.json"
    bad_quote.write_bytes(b"\x03\x00" + b"\x00" * 30)
    bad_collateral.write_text("{not json")
    at = ("--at", "2025-07-01T00:00:00Z")
    for argv, fragment in (
        ((str(bad_quote), "--collateral", good_collateral, *at), "header"),
        ((good_quote, "--collateral", str(bad_collateral), *at), "not valid JSON"),
        ((good_quote, "--collateral", str(tmp_path / "missing.json"), *at), "missing.json"),
        ((good_quote, "--collateral", good_collateral, "--at", "yesterday"), "--at"),
    ):
        code, data = _verify_json(capsys, *argv)
        assert code == 2
        assert data["verified"] is False
        assert fragment in str(data["reasons"])
        assert "tcb_status" not in data


def test_quote_verify_human_output_leaves_out_empty_fields(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    code = main([
        "quote", "verify", str(shared_data / "sgx" / "quote.bin"), "--collateral", str(bad),
        "--at", "2025-07-01T00:00:00Z",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 2
    assert "UNUSABLE" in out
    assert "None" not in out
    assert "tcb_status" not in out


def test_quote_verify_reports_freshness_and_what_is_below_up_to_date(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (
        str(shared_data / "sgx" / "quote.bin"), "--collateral", str(shared_data / "sgx" / "collateral.json"),
        "--at", "2025-07-01T00:00:00Z", "--allow-status", "ConfigurationAndSWHardeningNeeded",
    )  # fmt: skip
    code, data = _verify_json(capsys, *argv)
    assert code == 0
    assert data["tcb_evaluation_data_number"] == 17
    assert (data["tcb_date"], data["qe_tcb_date"]) == ("2024-03-13T00:00:00Z",) * 2
    assert data["shortfalls"] == [
        "sgxtcbcomp07 is 0; the SWHardeningNeeded level of 2024-03-13 needs 12"
    ]
    code, data = _verify_json(capsys, *argv, "--min-tcb-eval", "18")
    assert code == 1
    assert "tcb_evaluation_data_number: the TCB info is of TCB evaluation 17" in str(
        data["reasons"]
    )
    code, data = _verify_json(capsys, *argv, "--allow-advisory", "INTEL-SA-00289")
    assert code == 1
    assert "advisory INTEL-SA-00615 not allowed" in str(data["reasons"])
    code, _ = _verify_json(
        capsys, *argv, "--allow-advisory", "INTEL-SA-00289", "--allow-advisory", "INTEL-SA-00615"
    )
    assert code == 0
    assert main([*("quote", "verify"), *argv]) == 0
    out = capsys.readouterr().out
    assert "below UpToDate: sgxtcbcomp07 is 0" in out
    assert "tcb_evaluation_data_number 17" in " ".join(out.split())
