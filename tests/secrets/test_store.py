"""The kms's sealed store and owner requests, played by the host: it reads the kms's files,
puts back an old copy, replays captured requests and signs with keys of its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from teaclave_ma.attestation.attester import SimulatedTdAttester
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.formats.trust import TrustedAuditor
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.secrets.owner import OwnerRefused, OwnerRequest, check_signed, value_digest
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.secrets.store import HEAD_FILE, STORE_FILE, SecretStore, StoreRolledBack
from teaclave_ma.trust.sealed_state import (
    StateExists,
    StateMissing,
    StateNotOurs,
    StateSealer,
    StateTampered,
)
from tests.trust.sealing_helpers import STORAGE, sealer

OWNER = AuditorSigningKey.generate()
OWNERS = {OWNER.public_key.key_id: TrustedAuditor("ops", OWNER.public_key)}
VALUE = b"the api token: never on the host's disk"


@pytest.fixture(scope="module")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()


def kms_sealer(platform: SimulatedPlatform) -> StateSealer:
    return sealer(platform, STORAGE, "kms")


def put(store: SecretStore, name: str, value: bytes | None, operation: str = "put") -> None:
    request = OwnerRequest(
        operation, name, store.next_version(name), value_digest(value), store.store_id
    )
    owner = check_signed(
        request, OWNER.public_key.key_id, request.sign(OWNER), OWNERS, store.store_id
    )
    assert owner.name == "ops"
    store.apply(request, None if value is None else SecretValue(value))


def test_values_are_sealed_on_disk_and_survive_a_restart(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    store = SecretStore(tmp_path, kms_sealer(platform), initialize=True)
    put(store, "api-token", VALUE)
    for path in tmp_path.iterdir():
        assert VALUE not in path.read_bytes()
        assert b"api-token" not in path.read_bytes()  # not even the names
        assert path.stat().st_mode & 0o777 == 0o600
    again = SecretStore(tmp_path, kms_sealer(platform), initialize=False)
    assert again.values()["api-token"].reveal() == VALUE
    assert again.versions() == {"api-token": 1}


def test_an_old_copy_of_the_store_put_back_is_refused(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    store = SecretStore(tmp_path, kms_sealer(platform), initialize=True)
    put(store, "api-token", VALUE)
    old = (tmp_path / STORE_FILE).read_bytes()
    put(store, "api-token", b"rotated", "rotate")
    (tmp_path / STORE_FILE).write_bytes(old)  # the host's replay
    with pytest.raises(StoreRolledBack, match="generation 1 is older than the 2") as caught:
        SecretStore(tmp_path, kms_sealer(platform), initialize=False)
    assert caught.value.check == "kms_store.rollback"


def test_a_store_of_another_enclave_or_edited_does_not_unseal(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    store = SecretStore(tmp_path, kms_sealer(platform), initialize=True)
    put(store, "api-token", VALUE)
    other = sealer(platform, STORAGE, "storage")
    with pytest.raises(StateNotOurs, match="the state of service 'kms'"):
        SecretStore(tmp_path, other, initialize=False)
    data = bytearray((tmp_path / STORE_FILE).read_bytes())
    data[-10] ^= 1
    (tmp_path / STORE_FILE).write_bytes(bytes(data))
    with pytest.raises(StateTampered):
        SecretStore(tmp_path, kms_sealer(platform), initialize=False)


def test_a_missing_store_is_no_silent_reset_and_initializing_never_overwrites(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    with pytest.raises(StateMissing, match="start with --initialize-state"):
        SecretStore(tmp_path, kms_sealer(platform), initialize=False)
    SecretStore(tmp_path, kms_sealer(platform), initialize=True)
    with pytest.raises(StateExists, match="would forget its secrets"):
        SecretStore(tmp_path, kms_sealer(platform), initialize=True)
    (tmp_path / HEAD_FILE).unlink()
    with pytest.raises(StateMissing, match=HEAD_FILE):
        SecretStore(tmp_path, kms_sealer(platform), initialize=False)


def test_a_captured_request_cannot_be_replayed(platform: SimulatedPlatform, tmp_path: Path) -> None:
    store = SecretStore(tmp_path, kms_sealer(platform), initialize=True)
    request = OwnerRequest("put", "api-token", 1, value_digest(VALUE), store.store_id)
    signature = request.sign(OWNER)
    check_signed(request, OWNER.public_key.key_id, signature, OWNERS, store.store_id)
    store.apply(request, SecretValue(VALUE))
    put(store, "api-token", None, "delete")
    with pytest.raises(OwnerRefused, match="version 1 for secret 'api-token', expected 3"):
        store.apply(request, SecretValue(VALUE))  # the same signed put, after the delete
    other = SecretStore(tmp_path / "other", kms_sealer(platform), initialize=True)
    with pytest.raises(OwnerRefused, match="signed for kms store") as caught:
        check_signed(request, OWNER.public_key.key_id, signature, OWNERS, other.store_id)
    assert caught.value.check == "owner.store"


def test_a_request_not_signed_by_an_owner_is_refused() -> None:
    host = AuditorSigningKey.generate()
    request = OwnerRequest("put", "token-key", 1, value_digest(VALUE), "s")
    with pytest.raises(OwnerRefused, match="not one of the owners") as caught:
        check_signed(request, host.public_key.key_id, request.sign(host), OWNERS, "s")
    assert caught.value.check == "owner.key"
    with pytest.raises(OwnerRefused, match="not signed by owner 'ops'") as forged:
        check_signed(request, OWNER.public_key.key_id, request.sign(host), OWNERS, "s")
    assert forged.value.check == "owner.signature"
    swapped = OwnerRequest("put", "token-key", 1, value_digest(b"the host's value"), "s")
    with pytest.raises(OwnerRefused, match="not signed by owner"):
        check_signed(swapped, OWNER.public_key.key_id, request.sign(OWNER), OWNERS, "s")


def test_put_rotate_delete_follow_the_secret_s_life(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    store = SecretStore(tmp_path, kms_sealer(platform), initialize=True)
    with pytest.raises(OwnerRefused, match="no secret 'k' to rotate"):
        put(store, "k", b"v", "rotate")
    put(store, "k", b"v1")
    with pytest.raises(OwnerRefused, match="exists: rotate it instead"):
        put(store, "k", b"v2")
    put(store, "k", b"v2", "rotate")
    assert store.values()["k"].reveal() == b"v2"
    put(store, "k", None, "delete")
    assert store.versions() == {}
    assert "k" not in store.values()
    assert store.next_version("k") == 4  # the counter outlives the value


def test_without_a_sealing_key_nothing_is_written(
    platform: SimulatedPlatform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    td = SimulatedTdAttester(platform, simulated_td_identity(STORAGE))
    store = SecretStore(tmp_path, StateSealer(td, "kms", 2, unsealed_ok=True), initialize=True)
    put(store, "k", VALUE)
    assert list(tmp_path.iterdir()) == []
    assert "kept in memory only" in caplog.text


def test_the_state_directory_copied_to_an_enclave_of_another_signer_does_not_unseal(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    store = SecretStore(tmp_path / "a", kms_sealer(platform), initialize=True)
    put(store, "k", VALUE)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    rebuilt = sealer(platform, SgxIdentity(b"\x07" * 32, b"\x08" * 32, 4, 2, False), "kms")
    with pytest.raises(StateTampered, match="does not unseal"):
        SecretStore(tmp_path / "b", rebuilt, initialize=False)
