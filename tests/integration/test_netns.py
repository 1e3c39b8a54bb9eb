"""Services on separate hosts: each service in a network namespace of its own, joined to
each peer it calls by a veth pair with a /30 of 10.231.0.0/16, so every attested edge
crosses a real network interface. The addresses exist only inside the namespaces made here.

Needs root (CAP_SYS_ADMIN) and iproute2; skipped, saying what failed, where either is
missing. Namespace names carry a per-run token, so parallel runs do not collide, and every
namespace (with its veths) is deleted afterwards, whatever happened.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
import yaml

from teaclave_ma.demo.processes import ServiceProcess, serve_command, start_service
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.formats.strict import dump_yaml
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import TransportError

T = TypeVar("T")

PORT = 7000  # every service listens on it: each namespace has its own port space
CLONE_NEWNET = 0x40000000
NODES = ("client", "frontend", "authentication", "storage", "kms")
# (caller, callee) per link; link i is 10.231.i.0/30, the caller .1 and the callee .2.
LINKS = (
    ("client", "frontend"),
    ("frontend", "authentication"),
    ("frontend", "storage"),
    ("authentication", "storage"),
    ("authentication", "kms"),
)
# Start order: each service's outbound peers are already listening.
SERVICES = ("kms", "storage", "authentication", "frontend")
CLIENT_TIMEOUT = 2.0
PASSWORD = "difference engine"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


@attrs.define
class Link:
    index: int
    caller: str
    callee: str
    caller_dev: str
    callee_dev: str

    def address(self, side: str) -> str:
        return f"10.231.{self.index}.{1 if side == self.caller else 2}"


@attrs.define
class Network:
    """Namespaces and links created by this run, removed by ``teardown``."""

    run: str
    namespaces: list[str] = attrs.field(factory=list)
    links: list[Link] = attrs.field(factory=list)

    def ns(self, node: str) -> str:
        return f"tma-{self.run}-{node}"

    def must(self, *args: str) -> str:
        result = _ip(*args)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def add_namespace(self, node: str) -> None:
        name = self.ns(node)
        result = _ip("netns", "add", name)
        if result.returncode != 0:
            pytest.skip(f"ip netns add needs CAP_SYS_ADMIN: {result.stderr.strip()}")
        self.namespaces.append(name)
        self.must("-n", name, "link", "set", "lo", "up")
        # No IPv6 autoconfiguration chatter: the links carry our traffic and ARP only.
        for scope in ("all", "default"):
            self.must(
                "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1"
            )

    def add_link(self, caller: str, callee: str) -> Link:
        index = len(self.links)
        link = Link(index, caller, callee, f"t{self.run}{index}a", f"t{self.run}{index}b")
        self.must(
            "link", "add", link.caller_dev, "netns", self.ns(caller), "type", "veth",
            "peer", "name", link.callee_dev, "netns", self.ns(callee),
        )  # fmt: skip
        self.links.append(link)
        for node, dev in ((caller, link.caller_dev), (callee, link.callee_dev)):
            self.must("-n", self.ns(node), "addr", "add", f"{link.address(node)}/30", "dev", dev)
            self.must("-n", self.ns(node), "link", "set", dev, "up")
        return link

    def link(self, caller: str, callee: str) -> Link:
        return next(x for x in self.links if (x.caller, x.callee) == (caller, callee))

    def set_link(self, node: str, dev: str, state: str) -> None:
        self.must("-n", self.ns(node), "link", "set", dev, state)

    def packets(self, link: Link) -> int:
        """Packets received by the callee's end of a link."""
        out = self.must(
            "-n", self.ns(link.callee), "-s", "-j", "link", "show", "dev", link.callee_dev
        )
        stats: dict[str, int] = json.loads(out)[0]["stats64"]["rx"]
        return stats["packets"]

    def operstate(self, node: str, dev: str) -> str:
        out = self.must("-n", self.ns(node), "-j", "link", "show", "dev", dev)
        state: str = json.loads(out)[0]["operstate"]
        return state

    def teardown(self) -> None:
        # Deleting a namespace deletes the veth ends in it, and so both ends of each pair.
        for name in reversed(self.namespaces):
            _ip("netns", "delete", name)
        self.namespaces.clear()


class NamespacedThread:
    """One worker thread moved into a network namespace: the sockets it opens live there.

    ``setns`` acts on the calling thread only, so the rest of the test process stays in
    the root namespace.
    """

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._pool = concurrent.futures.ThreadPoolExecutor(1, initializer=self._enter)
        self._pool.submit(lambda: None).result()  # raises here if setns failed

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self._namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self._namespace}")
        finally:
            os.close(fd)

    def run(self, call: Callable[[], T], *, bound: float) -> T:
        """The call's result; ``bound`` only guards against a hang, it is no timing check."""
        return self._pool.submit(call).result(timeout=bound)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@attrs.define
class Hosts:
    network: Network
    processes: dict[str, ServiceProcess]
    client: PeerClient
    client_thread: NamespacedThread


def _runtime_config(
    deployment: SimulatedDeployment, name: str, peers: dict[str, tuple[str, int]]
) -> Path:
    path = deployment.runtime_config(f"netns-{name}", listen_port=PORT, peers=peers)
    document = yaml.safe_load(path.read_text())
    # Reachable on every link of its namespace (and only there: the namespace has no other).
    document["listen"] = f"0.0.0.0:{PORT}"
    path.write_bytes(dump_yaml(document))
    return path


@pytest.fixture(scope="module")
def hosts(
    deployment: SimulatedDeployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need iproute2's `ip`, which is not installed")
    network = Network(secrets.token_hex(3))
    processes: dict[str, ServiceProcess] = {}
    thread: NamespacedThread | None = None
    client: PeerClient | None = None
    logs = tmp_path_factory.mktemp("netns-logs")
    try:
        for node in NODES:
            network.add_namespace(node)
        for caller, callee in LINKS:
            network.add_link(caller, callee)

        def config(name: str) -> Path:
            peers = {
                link.callee: (link.address(link.callee), PORT)
                for link in network.links
                if link.caller == name
            }
            return _runtime_config(deployment, name, peers)

        for name in SERVICES:
            command = serve_command(
                deployment.images[name].root,
                deployment.manifest_path,
                deployment.signatures_dir,
                config(name),
                initialize_state=True,
            )
            processes[name] = start_service(
                name, ["ip", "netns", "exec", network.ns(name), *command], logs / f"{name}.log"
            )
            if name == "kms":  # its owner puts the secrets in from a host that reaches it
                owner = NamespacedThread(network.ns("authentication"))
                kms = (network.link("authentication", "kms").address("kms"), PORT)
                owner.run(lambda kms=kms: deployment.provision_kms(kms), bound=60)
                owner.close()
        config_path = config("client")
        node = EnclaveNode(
            deployment.images["client"],
            parse_runtime_config(config_path.read_bytes(), config_path.parent),
            deployment.manifest_path,
            deployment.signatures_dir,
            initialize_state=True,
        )
        # Its own client of the frontend rather than the node's: a short timeout for the cut.
        frontend = network.link("client", "frontend").address("frontend")
        client = PeerClient(
            "frontend", (frontend, PORT), node.credentials, node.verifier, timeout=CLIENT_TIMEOUT
        )
        thread = NamespacedThread(network.ns("client"))
        yield Hosts(network, processes, client, thread)
    finally:
        if client is not None and thread is not None:
            thread.run(client.close, bound=10)
        if thread is not None:
            thread.close()
        for process in processes.values():
            process.stop()
        network.teardown()


def _accepted_from(hosts: Hosts, service: str) -> list[str]:
    """The peer addresses the service logged accepting attested connections from."""
    text = hosts.processes[service].log_path.read_text()
    marker = f": {service} accepted "
    return [line.rsplit(" from ", 1)[1] for line in text.splitlines() if marker in line]


def test_every_attested_edge_crosses_its_own_link(hosts: Hosts) -> None:
    before = {(x.caller, x.callee): hosts.network.packets(x) for x in hosts.network.links}
    client = hosts.client

    def session() -> object:
        client.call("register", user="ada", password=PASSWORD)
        token = client.call("login", user="ada", password=PASSWORD)["token"]
        client.call("put", token=token, key="note", value="on another host")
        return client.call("get", token=token, key="note")["value"]

    assert hosts.client_thread.run(session, bound=60) == "on another host"
    after = {(x.caller, x.callee): hosts.network.packets(x) for x in hosts.network.links}
    # kms was called when authentication started; every other edge during the session.
    assert all(after[edge] > before[edge] for edge in before if edge[1] != "kms"), (before, after)
    assert after["authentication", "kms"] > 0
    # Each callee saw its caller at the caller's address on their shared link.
    for link in hosts.network.links:
        seen = {address.rsplit(":", 1)[0] for address in _accepted_from(hosts, link.callee)}
        assert link.address(link.caller) in seen, (link, seen)


def _wait_for_carrier(network: Network, link: Link) -> None:
    for _attempt in range(100):
        if network.operstate(link.caller, link.caller_dev) == "UP":
            return
        time.sleep(0.05)


def test_a_cut_link_fails_calls_cleanly_and_a_restored_one_reconnects(hosts: Hosts) -> None:
    network, client, thread = hosts.network, hosts.client, hosts.client_thread
    link = network.link("client", "frontend")
    bound = CLIENT_TIMEOUT * 5  # well past the client's timeout: a hang, not slowness

    def login() -> str:
        token: str = client.call("login", user="grace", password=PASSWORD)["token"]
        return token

    thread.run(lambda: client.call("register", user="grace", password=PASSWORD), bound=bound)
    assert thread.run(login, bound=bound)
    assert client.peer is not None  # connected, and the connection is kept
    connections = len(_accepted_from(hosts, "frontend"))

    network.set_link("frontend", link.callee_dev, "down")
    try:
        # On the open connection the request vanishes; then reconnecting cannot reach it.
        for _call in range(2):
            with pytest.raises(TransportError):
                thread.run(login, bound=bound)
            assert client.peer is None  # the broken connection was dropped
    finally:
        network.set_link("frontend", link.callee_dev, "up")
    _wait_for_carrier(network, link)

    assert thread.run(login, bound=bound)
    assert client.peer is not None
    # A new connection, attested afresh: the frontend accepted one more.
    assert len(_accepted_from(hosts, "frontend")) == connections + 1
