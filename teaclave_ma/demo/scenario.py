"""The demo's story: real RPCs through mutual RA-TLS, then the refusals that make it matter."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from teaclave_ma.demo.processes import (
    ChildProcesses,
    ServiceProcess,
    run_to_exit,
    serve_command,
    start_service,
)
from teaclave_ma.enclave.image import EnclaveImage
from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.secrets.client import fetch_secret
from teaclave_ma.secrets.policy import SecretRefused
from teaclave_ma.testing.deployment import Progress, SimulatedDeployment
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer

log = logging.getLogger(__name__)

SERVICES = ("client", "frontend", "authentication", "storage", "kms", "report")
DEMO_PASSWORD = "analytical engine"  # noqa: S105 - a demo user's password, printed nowhere


@attrs.frozen
class Outcome:
    title: str
    expected: str
    held: bool
    detail: str


class Demo:
    def __init__(
        self, root: Path, services_dir: Path, progress: Progress, children: ChildProcesses
    ) -> None:
        self.progress = progress
        self.children = children
        self.ws = SimulatedDeployment.create(root, services_dir, progress)
        self.outcomes: list[Outcome] = []
        self.processes: dict[str, ServiceProcess] = {}
        self._runtimes: list[ServiceRuntime] = []

    def run(self) -> list[Outcome]:
        try:
            self._prepare()
            self._start_services()
            self._happy_path()
            self._tampered_service()
            self._under_signed_manifest()
            self._debug_enclave()
            self._edge_not_allowed()
            self._wrong_service_at_address()
            self._secret_for_another_service()
            self._sealed_job_runs_after_provisioning()
            self._sealed_job_with_an_impostor_kms()
        finally:
            for runtime in self._runtimes:
                runtime.stop()
            self.children.stop_all()
        return self.outcomes

    # -- preparation -----------------------------------------------------------------------

    def _prepare(self) -> None:
        self.ws.add_secret("token-key", ["authentication"])
        self.ws.add_secret("api-token", ["report"])
        sealed = self.ws.seal("report", ["config.yaml"])
        self.progress(
            "kms release policy (signed in the manifest): token-key for authentication, "
            "api-token and report's sealing key for report"
        )
        self.progress("sealed report/config.yaml; its key stays in memory until the kms runs")
        self.progress(
            "building enclave images with the trust file and the SIMULATED platform's root "
            "embedded (quotes prove nothing about hardware):"
        )
        for name in SERVICES:
            identity = self.ws.build(name, source=sealed if name == "report" else None).identity
            self.progress(f"  {name:<15} mr_enclave {identity.mr_enclave.hex()[:24]}...")
        self.progress("auditors review: rebuild each service from source and compare measurements")
        entries = {name: self.ws.review(name) for name in SERVICES}
        self.ws.publish_manifest(entries, version=1, signers=["alice", "bob"])
        self.progress(
            f"manifest v1 accepts all {len(SERVICES)} services; signed by alice and bob (2 of 3)"
        )

    def _config(self, name: str, **peers: tuple[str, int]) -> Path:
        return self.ws.runtime_config(name, peers=peers)

    def _start_services(self) -> None:
        self.progress("starting each service as its own process on loopback:")
        order: list[tuple[str, tuple[str, ...]]] = [
            ("kms", ()),
            ("storage", ()),
            ("authentication", ("storage", "kms")),
            ("frontend", ("authentication", "storage")),
        ]
        for name, peers in order:
            config = self.ws.runtime_config(
                name, peers={p: self.processes[p].address for p in peers}
            )
            command = serve_command(
                self.ws.images[name].root,
                self.ws.manifest_path,
                self.ws.signatures_dir,
                config,
                initialize_state=True,  # each service's first start
            )
            process = start_service(
                name, command, self.ws.root / "logs" / f"{name}.log", children=self.children
            )
            self.processes[name] = process
            self.progress(f"  {name:<15} listening on {process.address[0]}:{process.address[1]}")
            if name == "kms":
                self.ws.provision_kms(process.address)
                self.progress(
                    "  the owner attested the kms and put its secrets over TLS, signed; "
                    "the kms keeps them sealed"
                )

    def _frontend(
        self, name: str, image: EnclaveImage | None = None, storage: tuple[str, int] | None = None
    ) -> ServiceRuntime:
        """A frontend enclave (the real build unless ``image``) wired to the running peers."""
        return self._runtime(
            image or self.ws.images["frontend"],
            name,
            storage=storage or self.processes["storage"].address,
            authentication=self.processes["authentication"].address,
        )

    def _runtime(self, image: EnclaveImage, name: str, **peers: tuple[str, int]) -> ServiceRuntime:
        """An in-process enclave (not serving) whose outbound calls the demo makes."""
        config_path = self._config(name, **peers)
        config = parse_runtime_config(config_path.read_bytes(), config_path.parent)
        runtime = ServiceRuntime(
            image, config, self.ws.manifest_path, self.ws.signatures_dir, initialize_state=True
        )
        self._runtimes.append(runtime)
        return runtime

    def _record(self, title: str, expected: str, held: bool, detail: str) -> None:
        self.outcomes.append(Outcome(title, expected, held, detail))
        self.progress(f"[{'ok' if held else 'FAILED'}] {title}: {detail}")

    @contextlib.contextmanager
    def _expect_refusal(
        self, title: str, expected: str, kind: type[Exception], *, refused_by: str | None = None
    ) -> Iterator[None]:
        """``refused_by`` names the service process whose log states its side of the refusal."""
        seen = len(self._refusals(refused_by)) if refused_by is not None else 0
        try:
            yield
        except kind as exc:
            detail = str(exc)
            if refused_by is not None:
                detail += f"; {refused_by} says: {self._new_refusal(refused_by, seen)}"
            self._record(title, expected, True, detail)
        except TeaclaveMAError as exc:
            self._record(title, expected, False, f"refused, but not as expected: {exc!r}")
        else:
            self._record(title, expected, False, "no refusal happened")

    def _refusals(self, service: str) -> list[str]:
        text = self.processes[service].log_path.read_text()
        return [
            line.split("refused client ", 1)[1]
            for line in text.splitlines()
            if "refused client" in line
        ]

    def _new_refusal(self, service: str, seen: int) -> str:
        """The refusal the service logged after ``seen`` earlier ones (it logs after its alert)."""
        for _attempt in range(100):
            refusals = self._refusals(service)
            if len(refusals) > seen:
                return refusals[seen]
            time.sleep(0.05)
        return "(nothing logged)"

    # -- the story -------------------------------------------------------------------------

    def _happy_path(self) -> None:
        self.progress("the client enclave calls the frontend; every hop is mutual RA-TLS:")
        client = self._runtime(
            self.ws.images["client"], "client", frontend=self.processes["frontend"].address
        )
        self.client = client
        frontend = client.context.client("frontend")
        steps: list[tuple[str, Callable[[], object]]] = [
            (
                "register ada",
                lambda: frontend.call("register", user="ada", password=DEMO_PASSWORD),
            ),
            ("login ada", lambda: frontend.call("login", user="ada", password=DEMO_PASSWORD)),
        ]
        results = [call() for _label, call in steps]
        token = results[1]["token"]  # type: ignore[index]
        frontend.call("put", token=token, key="note", value="first program")
        value = frontend.call("get", token=token, key="note")["value"]
        peer = frontend.peer
        detail = (
            f"register, login, put and get answered; read back {value!r} from storage via "
            f"frontend -> authentication -> storage; frontend attested as {peer.describe() if peer else '?'}"
        )
        self._record(
            "attested RPC end to end", "all calls answered", value == "first program", detail
        )

    def _tampered_service(self) -> None:
        def change_one_line(source: Path) -> None:
            path = source / "frontend_service.py"
            path.write_text(path.read_text().replace("BAD_KEY = -32010", "BAD_KEY = -32011"))

        source = self.ws.variant_source("frontend", "-tampered", change_one_line)
        image = self.ws.build("frontend", source=source, tag="-tampered")
        self.progress(
            f"rebuilt frontend with one changed line: mr_enclave {image.identity.mr_enclave.hex()[:24]}..."
        )
        runtime = self._frontend("frontend-tampered", image)
        with self._expect_refusal(
            "tampered frontend calls storage",
            "storage refuses it",
            RefusedByPeer,
            refused_by="storage",
        ):
            runtime.context.client("storage").call("keys")

    def _under_signed_manifest(self) -> None:
        signatures = self.ws.signatures_by(["alice"], self.ws.root / "signatures-alice-only")
        config = self._config("storage-undersigned")
        command = serve_command(
            self.ws.images["storage"].root,
            self.ws.manifest_path,
            signatures,
            config,
            initialize_state=True,
        )
        result = run_to_exit(command, self.children)
        refused = result.returncode != 0 and "1 of the required 2" in result.stderr
        last_line = (result.stderr.strip().splitlines() or ["(nothing)"])[-1]
        self._record(
            "storage started with a manifest signed by alice only",
            "it refuses to start",
            refused,
            f"exit status {result.returncode}: {last_line}",
        )

    def _debug_enclave(self) -> None:
        def make_debug(source: Path) -> None:
            path = source / "service.yaml"
            path.write_text(path.read_text().replace("isv_svn: 1\n", "isv_svn: 1\n  debug: true\n"))

        source = self.ws.variant_source("storage", "-debug", make_debug)
        image = self.ws.build("storage", source=source, tag="-debug")
        debug_storage = self._runtime(image, "storage-debug")
        address = debug_storage.start()
        self.progress(f"started a DEBUG build of storage on {address[0]}:{address[1]}")
        frontend = self._frontend("frontend-probe", storage=address)
        with self._expect_refusal(
            "frontend connects to a debug storage enclave", "frontend refuses it", PeerRejected
        ):
            frontend.context.client("storage").call("keys")

    def _edge_not_allowed(self) -> None:
        client = self.client
        rogue = PeerClient(
            "storage", self.processes["storage"].address, client.credentials, client.verifier
        )
        with self._expect_refusal(
            "client calls storage directly",
            "storage refuses: client is not inbound",
            RefusedByPeer,
            refused_by="storage",
        ):
            rogue.call("keys")
        rogue.close()

    def _secret_for_another_service(self) -> None:
        frontend = self._frontend("frontend-asks-kms")
        kms = PeerClient(
            "kms", self.processes["kms"].address, frontend.credentials, frontend.verifier
        )
        with self._expect_refusal(
            "frontend asks the kms for authentication's token key",
            "the kms refuses, naming the rule",
            SecretRefused,
        ):
            fetch_secret(kms, "token-key")
        kms.close()

    def _run_report(self, name: str, kms: tuple[str, int]) -> subprocess.CompletedProcess[str]:
        config = self.ws.runtime_config(name, peers={"kms": kms}, provision=True)
        command = [
            sys.executable, "-m", "teaclave_ma.cli.main", "run", str(self.ws.images["report"].root),
            "--manifest", str(self.ws.manifest_path), "--signatures", str(self.ws.signatures_dir),
            "--config", str(config), "--initialize-state",
        ]  # fmt: skip
        return run_to_exit(command, self.children)

    def _sealed_job_runs_after_provisioning(self) -> None:
        result = self._run_report("report", self.processes["kms"].address)
        output = result.stdout.strip()
        self._record(
            "sealed report job started with `teaclave-ma run`",
            "attested, provisioned, unsealed, then run",
            result.returncode == 0 and output.startswith("report ran for ACME Bank"),
            output or (result.stderr.strip().splitlines() or ["(no output)"])[-1],
        )

    def _sealed_job_with_an_impostor_kms(self) -> None:
        result = self._run_report("report-impostor-kms", self.processes["storage"].address)
        reason = (result.stderr.strip().splitlines() or ["(nothing)"])[-1]
        self._record(
            "sealed report job pointed at storage posing as the kms",
            "it never starts",
            result.returncode != 0
            and "report ran" not in result.stdout
            and "not accepted for service 'kms'" in reason,
            f"exit status {result.returncode}: {reason}",
        )

    def _wrong_service_at_address(self) -> None:
        client = self.client
        misdirected = PeerClient(
            "frontend",
            self.processes["authentication"].address,
            client.credentials,
            client.verifier,
        )
        with self._expect_refusal(
            "client expects frontend but reaches authentication",
            "client refuses the server",
            PeerRejected,
        ):
            misdirected.call("login", user="ada", password=DEMO_PASSWORD)
        misdirected.close()
