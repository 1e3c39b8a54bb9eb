"""The real quote backends, run against directory trees laid out like Gramine's
/dev/attestation and the kernel's configfs-tsm, including their failure modes."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from teaclave_ma.attestation import backends
from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA
from teaclave_ma.attestation.attester import SealingPolicy, SealingUnavailable
from teaclave_ma.attestation.backends import (
    AttesterFailed,
    AttesterUnavailable,
    GramineAttester,
    TsmAttester,
)
from teaclave_ma.attestation.quote import parse_quote
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.main import main
from teaclave_ma.enclave.image import EnclaveImage
from teaclave_ma.errors import ConfigError
from teaclave_ma.formats.runtime_config import AttestationConfig, parse_runtime_config
from teaclave_ma.formats.service_config import BackendConfig
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.runtime.attestation_setup import select_real_backend
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.testing.deployment import SimulatedDeployment

SERVICES = Path(__file__).resolve().parents[2] / "services"

IDENTITY = SgxIdentity(b"\x42" * 32, b"\x43" * 32, isv_prod_id=1, isv_svn=1, debug=False)
REPORT_DATA = bytes(range(64))


class FakeGramine:
    """/dev/attestation: ``quote`` is a FIFO, so a read blocks until this 'Gramine' answers
    with a quote over whatever is in ``user_report_data`` at that moment, as Gramine does."""

    def __init__(self, root: Path, platform: SimulatedPlatform, kind: str = "dcap") -> None:
        self.root = root
        root.mkdir()
        (root / "attestation_type").write_text(kind + "\n")
        (root / "user_report_data").write_bytes(bytes(64))
        os.mkfifo(root / "quote")
        (root / "keys").mkdir()
        for name in ("_sgx_mrenclave", "_sgx_mrsigner"):  # what EGETKEY gave this enclave
            (root / "keys" / name).write_bytes(os.urandom(16))
        self.platform = platform
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            with (self.root / "quote").open("wb") as pipe:  # blocks until a reader opens it
                if self.stop:
                    return
                report_data = (self.root / "user_report_data").read_bytes()
                pipe.write(self.platform.quote(IDENTITY, report_data))
            # let the reader see end-of-file before the next writer opens the FIFO
            time.sleep(0.05)

    def close(self) -> None:
        self.stop = True
        try:  # release a writer blocked in open()
            fd = os.open(self.root / "quote", os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        self.thread.join(timeout=2)


class FakeTsm:
    """A configfs-tsm report entry and a 'kernel' that answers writes to inblob: outblob
    first, then generation + ``step`` (a step of 2 imitates a concurrent writer)."""

    def __init__(
        self, root: Path, platform: SimulatedPlatform, step: int = 1, answer: bool = True
    ) -> None:
        self.entry = root / "shared"
        self.entry.mkdir(parents=True)
        (self.entry / "generation").write_text("0\n")
        (self.entry / "provider").write_text("tdx_guest\n")
        (self.entry / "inblob").write_bytes(b"")
        (self.entry / "outblob").write_bytes(b"")
        self.platform, self.step, self.stop = platform, step, threading.Event()
        self.thread = threading.Thread(target=self._kernel, daemon=True)
        if answer:
            self.thread.start()

    def _kernel(self) -> None:
        while not self.stop.wait(0.0005):
            inblob = (self.entry / "inblob").read_bytes()
            if len(inblob) == 64:  # every write counts, as in the kernel: consume it
                (self.entry / "inblob").write_bytes(b"")
                (self.entry / "outblob").write_bytes(self.platform.quote(IDENTITY, inblob))
                generation = int((self.entry / "generation").read_text())
                # replaced in one step, so a reader never sees a half-written number
                (self.entry / "generation.new").write_text(f"{generation + self.step}\n")
                os.replace(self.entry / "generation.new", self.entry / "generation")

    def close(self) -> None:
        self.stop.set()


@pytest.fixture
def gramine(tmp_path: Path, platform: SimulatedPlatform) -> Iterator[FakeGramine]:
    fake = FakeGramine(tmp_path / "attestation", platform)
    yield fake
    fake.close()


def test_gramine_backend_quotes_the_report_data_it_was_given(gramine: FakeGramine) -> None:
    quote = parse_quote(GramineAttester(gramine.root).quote(REPORT_DATA))
    assert quote.report_data == REPORT_DATA
    assert quote.body.identity() == IDENTITY  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [("none", 'sgx.remote_attestation = "dcap"'), ("epid", "only 'dcap' is supported")],
)
def test_gramine_backend_explains_an_unusable_attestation_type(
    tmp_path: Path, kind: str, fragment: str
) -> None:
    root = tmp_path / "attestation"
    root.mkdir()
    (root / "attestation_type").write_text(kind)
    with pytest.raises(AttesterUnavailable, match=fragment):
        GramineAttester(root).quote(REPORT_DATA)


def test_gramine_backend_failure_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AttesterUnavailable, match="not running inside a Gramine enclave"):
        GramineAttester(tmp_path / "missing").check()
    root = tmp_path / "attestation"
    root.mkdir()
    with pytest.raises(AttesterUnavailable, match="attestation_type is missing"):
        GramineAttester(root).check()
    (root / "attestation_type").write_text("dcap")
    with pytest.raises(AttesterFailed, match="user_report_data does not exist"):
        GramineAttester(root).quote(REPORT_DATA)
    (root / "user_report_data").write_bytes(bytes(64))
    with pytest.raises(AttesterFailed, match="quote does not exist"):
        GramineAttester(root).quote(REPORT_DATA)
    (root / "quote").write_bytes(b"\x03\x00short")
    with pytest.raises(AttesterFailed, match="short read"):
        GramineAttester(root).quote(REPORT_DATA)
    with pytest.raises(AttesterFailed, match="must be 64 bytes"):
        GramineAttester(root).quote(b"short")

    def denied(*_args: object, **_kwargs: object) -> None:
        raise PermissionError

    monkeypatch.setattr(backends, "_open_for_writing", denied)  # root bypasses file modes
    with pytest.raises(AttesterFailed, match="permission denied writing"):
        GramineAttester(root).quote(REPORT_DATA)


def test_tsm_backend_quotes_through_a_report_entry(
    tmp_path: Path, platform: SimulatedPlatform
) -> None:
    fake = FakeTsm(tmp_path / "report", platform)
    try:
        attester = TsmAttester(tmp_path / "report", entry_name="shared")
        assert parse_quote(attester.quote(REPORT_DATA)).report_data == REPORT_DATA
        assert parse_quote(attester.quote(REPORT_DATA[::-1])).report_data == REPORT_DATA[::-1]
        assert attester.provider() == "tdx_guest"
    finally:
        fake.close()


def test_tsm_backend_refuses_a_report_a_concurrent_writer_touched(
    tmp_path: Path, platform: SimulatedPlatform
) -> None:
    fake = FakeTsm(tmp_path / "report", platform, step=2)
    try:
        with pytest.raises(AttesterFailed, match="another writer kept changing the report"):
            TsmAttester(tmp_path / "report", entry_name="shared").quote(REPORT_DATA)
    finally:
        fake.close()


def test_tsm_backend_failure_modes(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with pytest.raises(AttesterUnavailable, match=r"needs Linux 6\.7"):
        TsmAttester(tmp_path / "missing").check()
    FakeTsm(tmp_path / "report", platform, answer=False)  # an entry nobody answers
    with pytest.raises(AttesterFailed, match="did not advance"):
        TsmAttester(tmp_path / "report", entry_name="shared", settle_timeout=0.05).quote(
            REPORT_DATA
        )
    with pytest.raises(AttesterFailed, match="does not exist"):
        TsmAttester(tmp_path / "report", entry_name="absent").quote(REPORT_DATA)
    (tmp_path / "report" / "shared" / "generation").write_text("many")
    with pytest.raises(AttesterFailed, match="expected a number"):
        TsmAttester(tmp_path / "report", entry_name="shared").quote(REPORT_DATA)
    # a fresh private entry: plain mkdir gives no attribute files outside the kernel
    with pytest.raises(AttesterFailed, match="generation does not exist"):
        TsmAttester(tmp_path / "report").quote(REPORT_DATA)
    assert [p.name for p in (tmp_path / "report").iterdir()] == ["shared"]  # and it cleaned up


def test_auto_selection_and_doctor(
    gramine: FakeGramine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = BackendConfig(gramine_device=gramine.root, tsm_root=tmp_path / "no-tsm")
    assert select_real_backend(both, AttestationConfig()).name == "gramine"
    tsm_only = BackendConfig(("tsm",), gramine_device=gramine.root, tsm_root=tmp_path / "no-tsm")
    with pytest.raises(AttesterUnavailable, match="none of the attestation backends this image"):
        select_real_backend(tsm_only, AttestationConfig())  # gramine is here, but not allowed
    nothing = BackendConfig(gramine_device=tmp_path / "none", tsm_root=tmp_path / "no-tsm")
    with pytest.raises(AttesterUnavailable, match="none of the attestation backends this image"):
        select_real_backend(nothing, AttestationConfig())
    assert (
        main(
            [
                "doctor",
                "--gramine-device",
                str(gramine.root),
                "--tsm-root",
                str(tmp_path / "no-tsm"),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["would_use"] == "gramine"
    available = {b["backend"]: b["available"] for b in report["backends"]}
    assert available == {"gramine": True, "tsm": False, "simulated": True}


def storage_node(
    tmp_path: Path,
    platform: SimulatedPlatform,
    attestation: str,
    runtime_lines: str = "",
    *,
    collateral: bool = True,
    unsealed_ok: bool = False,
) -> tuple[EnclaveNode, EnclaveImage]:
    """storage built for real hardware with ``attestation`` as its measured service.yaml
    section, accepted by a manifest, started with collateral from a file."""
    deployment = SimulatedDeployment.create(tmp_path / "d", SERVICES)

    def measured_backends(source: Path) -> None:
        with (source / "service.yaml").open("a") as service_yaml:
            service_yaml.write(f"attestation: {attestation}\n")
            if unsealed_ok:
                service_yaml.write("state: {unsealed_ok: true}\n")

    source = deployment.variant_source("storage", "-hardware", measured_backends)
    image = deployment.build("storage", source=source, tee=None)
    deployment.publish_manifest(
        {"storage": deployment.review("storage")}, version=1, signers=["alice", "bob"]
    )
    (tmp_path / "collateral.json").write_bytes(platform.collateral_json())
    config = tmp_path / "runtime.yaml"
    source_line = "  collateral: {file: collateral.json}\n" if collateral else ""
    config.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: state\nattestation:\n{source_line}{runtime_lines}"
        if source_line or runtime_lines
        else "listen: 127.0.0.1:0\nstate_dir: state\n"
    )
    runtime = parse_runtime_config(config.read_bytes(), tmp_path)
    node = EnclaveNode(
        image,
        runtime,
        deployment.manifest_path,
        deployment.signatures_dir,
        initialize_state=True,
    )
    return node, image


def test_an_image_starts_on_the_gramine_backend_its_service_yaml_names(
    gramine: FakeGramine, platform: SimulatedPlatform, tmp_path: Path
) -> None:
    node, image = storage_node(
        tmp_path, platform, f"{{backends: [gramine], gramine_device: {gramine.root}}}"
    )
    assert node.attestation.backend == "gramine"
    assert node.attestation.anchor == INTEL_SGX_ROOT_CA  # real backends trust Intel's root only
    # on hardware, who we are comes from our own quote, not from the image's simulated measurement
    assert node.self_identity() == IDENTITY
    assert node.self_identity() != image.identity


def test_real_images_need_collateral_and_runtime_yaml_cannot_pick_a_backend(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="exactly one of file or pccs"):
        parse_runtime_config(
            b"listen: 127.0.0.1:0\nstate_dir: s\nattestation: {collateral: {}}\n", tmp_path
        )
    with pytest.raises(ConfigError, match=r"attestation\.backend: decides whom this service"):
        parse_runtime_config(
            b"listen: 127.0.0.1:0\nstate_dir: s\n"
            b"attestation: {backend: auto, collateral: {file: c.json}}\n",
            tmp_path,
        )


def test_a_real_image_without_collateral_is_refused(
    gramine: FakeGramine, platform: SimulatedPlatform, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="a real image needs collateral"):
        storage_node(tmp_path, platform, f"{{gramine_device: {gramine.root}}}", collateral=False)


def test_tsm_empty_outblob_is_a_clear_error(tmp_path: Path, platform: SimulatedPlatform) -> None:
    fake = FakeTsm(tmp_path / "report", EmptyQuotes(platform))  # type: ignore[arg-type]
    try:
        with pytest.raises(AttesterFailed, match="outblob: empty read"):
            TsmAttester(tmp_path / "report", entry_name="shared").quote(REPORT_DATA)
    finally:
        fake.close()


class EmptyQuotes:
    """A quote source that answers with nothing, as a broken provider might."""

    def __init__(self, platform: SimulatedPlatform) -> None:
        self.platform = platform

    def quote(self, identity: SgxIdentity, report_data: bytes) -> bytes:
        return b""


def test_an_image_starts_on_the_tsm_backend_its_service_yaml_names(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    fake = FakeTsm(tmp_path / "report", platform)
    try:
        node, _image = storage_node(
            tmp_path,
            platform,
            f"{{backends: [tsm], tsm_root: {tmp_path / 'report'}}}",
            "  tsm_entry: shared\n",
            unsealed_ok=True,  # TDX has no sealing key
        )
        assert node.attestation.backend == "tsm"
        assert node.self_identity() == IDENTITY
    finally:
        fake.close()


def test_tsm_permission_denied_names_the_file(
    tmp_path: Path, platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTsm(tmp_path / "report", platform)

    def denied(_path: Path) -> int:
        raise PermissionError

    monkeypatch.setattr(backends, "_open_for_writing", denied)  # root bypasses file modes
    try:
        with pytest.raises(AttesterFailed, match=r"permission denied writing .*shared/inblob"):
            TsmAttester(tmp_path / "report", entry_name="shared").quote(REPORT_DATA)
    finally:
        fake.close()


def test_gramine_sealing_keys_come_from_its_keys_directory(gramine: FakeGramine) -> None:
    attester = GramineAttester(gramine.root)
    for policy in SealingPolicy:
        assert (
            attester.sealing_key(policy)
            == (gramine.root / "keys" / f"_sgx_{policy.value}").read_bytes()
        )
    with pytest.raises(SealingUnavailable, match="own ISV SVN only, not for ISV SVN 1"):
        attester.sealing_key(SealingPolicy.MRSIGNER, 1)
    (gramine.root / "keys" / "_sgx_mrsigner").write_bytes(b"short")
    with pytest.raises(AttesterFailed, match=r"_sgx_mrsigner: expected a 16-byte key, got 5 bytes"):
        attester.sealing_key(SealingPolicy.MRSIGNER)
    (gramine.root / "keys" / "_sgx_mrenclave").unlink()
    with pytest.raises(AttesterFailed, match="_sgx_mrenclave does not exist"):
        attester.sealing_key(SealingPolicy.MRENCLAVE)


def test_tsm_has_no_sealing_key(tmp_path: Path) -> None:
    with pytest.raises(SealingUnavailable, match="a TDX guest has no sealing key") as caught:
        TsmAttester(tmp_path / "report").sealing_key(SealingPolicy.MRSIGNER)
    assert caught.value.field == "tsm"
