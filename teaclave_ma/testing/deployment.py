"""A local deployment on the simulated platform, prepared the way users prepare a real one:
auditors and their trust file, an author key, enclave images, auditor review, a signed
manifest, the platform, and per-service runtime configs. The demo and the tests use it;
service authors can use it (through the pytest plugin) to test their own services."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.caller import outside_verifier
from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.crypto.author_key import generate_author_key, write_author_key
from teaclave_ma.enclave.attestation_profile import INTEL_PROFILE, simulated_profile
from teaclave_ma.enclave.image import EnclaveImage, build_image, review
from teaclave_ma.formats.manifest import Accepted, Manifest, SecretRelease
from teaclave_ma.formats.signature import write_signature
from teaclave_ma.formats.strict import dump_yaml
from teaclave_ma.formats.trust import TrustedAuditor
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.secrets.client import KmsOwnerClient
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.secrets.sealing import new_key, seal_source, sealing_secret_name
from teaclave_ma.testing.auditors import AuditorPanel, accepted

Progress = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


AUDITORS = ("alice", "bob", "carol")


@attrs.define
class SimulatedDeployment:
    root: Path
    services_dir: Path
    panel: AuditorPanel
    author_key: Path
    trust_path: Path
    owner_key: AuditorSigningKey  # the one secret owner, measured into every image
    images: dict[str, EnclaveImage] = attrs.field(factory=dict)
    sources: dict[str, Path] = attrs.field(factory=dict)
    # The release policy the auditors sign into the next manifest published.
    secret_rules: dict[str, SecretRelease] = attrs.field(factory=dict)
    # Values the owner puts into the kms once it runs (``provision_kms``); never on disk.
    pending: dict[str, SecretValue] = attrs.field(factory=dict)
    platform_dir: Path = attrs.field(init=False)
    manifest_path: Path = attrs.field(init=False)
    signatures_dir: Path = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.platform_dir = self.root / "sim-platform"
        self.manifest_path = self.root / "manifest.yaml"
        self.signatures_dir = self.root / "signatures"

    @classmethod
    def create(
        cls, root: Path, services_dir: Path, progress: Progress = _quiet
    ) -> SimulatedDeployment:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        panel = AuditorPanel(count=len(AUDITORS), threshold=2, names=AUDITORS)
        for auditor in panel.auditors:
            progress(f"auditor {auditor.name}: key id {auditor.key_id[:16]}...")
        owner_key = AuditorSigningKey.generate()
        trust_path = root / "keys" / "trust.yaml"
        owners = (TrustedAuditor("owner", owner_key.public_key),)
        atomic_write(trust_path, attrs.evolve(panel.trust, owners=owners).to_bytes())
        progress(f"trust file {trust_path.relative_to(root)}: 2 of 3 auditors must sign")
        progress(f"secret owner: key id {owner_key.public_key.key_id[:16]}... (measured)")
        author_key = root / "author" / "author.key.pem"
        write_author_key(generate_author_key(), author_key)
        progress("enclave author key: RSA-3072 (MRSIGNER = SHA-256 of its modulus)")
        deployment = cls(root, services_dir, panel, author_key, trust_path, owner_key)
        SimulatedPlatform.create().save(deployment.platform_dir)
        progress("SIMULATED platform: its root is measured into every image built here")
        return deployment

    def build(
        self, service: str, *, source: Path | None = None, tag: str = "", tee: str | None = "SGX"
    ) -> EnclaveImage:
        """Build for this deployment's simulated platform, as an SGX enclave or a TD; with
        ``tee=None``, for real hardware (Intel's root, the backends of its service.yaml)."""
        out = self.root / "images" / (service + tag)
        source = source or self.services_dir / service
        profile = INTEL_PROFILE
        if tee is not None:
            root_der = (self.platform_dir / "root.der").read_bytes()
            profile = simulated_profile(root_der, "sim-platform", tee)
        image = build_image(source, self.trust_path, self.author_key, out, profile=profile)
        self.images[service + tag] = image
        self.sources[service + tag] = source
        return image

    def review(self, service: str) -> Accepted:
        """What an auditor does: rebuild from source and compare before vouching."""
        return accepted(review(self.sources[service], self.trust_path, self.images[service]))

    def add_secret(
        self, name: str, allow: list[str], value: SecretValue | None = None
    ) -> SecretValue:
        """A secret (random 32 bytes unless given) for the owner to put into the kms
        (``provision_kms``); its release to ``allow`` is part of the next manifest published."""
        value = value or SecretValue(secrets.token_bytes(32))
        self.pending[name] = value
        self.secret_rules[name] = SecretRelease(tuple(allow))
        return value

    def seal(self, service: str, files: list[str]) -> Path:
        """A sealed copy of a service's source, its key registered with the kms."""
        out = self.root / "sealed" / service
        key = new_key()
        seal_source(self.services_dir / service, files, out, key)
        self.add_secret(sealing_secret_name(service), [service], key)
        return out

    def kms_owner(
        self,
        address: tuple[str, int],
        *,
        manifest: Path | None = None,
        signatures: Path | None = None,
    ) -> KmsOwnerClient:
        """The owner's attested connection to the kms at ``address``, verified under
        ``manifest`` (the deployment's unless given)."""
        verifier = outside_verifier(
            manifest=manifest or self.manifest_path,
            signatures=signatures or self.signatures_dir,
            trust=self.trust_path,
            simulated_platform=self.platform_dir,
        )
        return KmsOwnerClient(address, self.owner_key, verifier)

    def provision_kms(
        self,
        address: tuple[str, int],
        *,
        manifest: Path | None = None,
        signatures: Path | None = None,
    ) -> None:
        """The owner puts (or rotates) every secret added so far into the running kms."""
        with self.kms_owner(address, manifest=manifest, signatures=signatures) as owner:
            _, held = owner.listing()
            for name, value in self.pending.items():
                owner.change("rotate" if name in held else "put", name, value)

    def publish_manifest(
        self, entries: dict[str, Accepted], *, version: int, signers: Iterable[str]
    ) -> Path:
        expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
        manifest = Manifest(
            version=version,
            expires=expires,
            enclaves={k: (v,) for k, v in entries.items()},
            secrets=dict(self.secret_rules),
        )
        data = manifest.to_bytes()
        atomic_write(self.manifest_path, data)
        self.signatures_dir.mkdir(parents=True, exist_ok=True)
        for auditor in self.panel.signers(signers):
            write_signature(self.signatures_dir, auditor.sign(data))
        return self.manifest_path

    def signatures_by(self, names: Iterable[str], directory: Path) -> Path:
        """A separate signature directory holding only ``names``' signatures."""
        return self.panel.write_signatures(directory, self.manifest_path.read_bytes(), by=names)

    def platform(self) -> SimulatedPlatform:
        return SimulatedPlatform.load(self.platform_dir)

    def runtime_config(
        self,
        name: str,
        *,
        listen_port: int = 0,
        peers: dict[str, tuple[str, int]] | None = None,
        settings: dict[str, str] | None = None,
        provision: bool = False,
    ) -> Path:
        path = self.root / "run" / name / "runtime.yaml"
        document: dict[str, object] = {
            "listen": f"127.0.0.1:{listen_port}",
            "peers": {peer: f"{host}:{port}" for peer, (host, port) in (peers or {}).items()},
            "state_dir": "state",
            "attestation": {"simulated_platform": str(self.platform_dir)},
        }
        if settings:
            document["settings"] = settings
        if provision:
            document["provision_dir"] = "provisioned"
        atomic_write(path, dump_yaml(document))
        return path

    def variant_source(self, service: str, tag: str, edit: Callable[[Path], None]) -> Path:
        """A copy of a service's source with one deliberate change."""
        target = self.root / "variants" / f"{service}{tag}"
        shutil.copytree(
            self.services_dir / service, target, ignore=shutil.ignore_patterns("__pycache__")
        )
        edit(target)
        return target
