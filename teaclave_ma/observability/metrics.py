"""Prometheus metrics of a service, behind the ``Observer`` interface.

With several worker processes (``teaclave-ma serve --workers N``) prometheus-client's
multiprocess mode is used: each process writes its samples to files in the directory named
by ``PROMETHEUS_MULTIPROC_DIR`` (set by the parent before this module is first imported)
and the parent's scrape adds them up. Counters and histograms sum over the workers; the
per-worker gauges carry a ``pid`` label, so an operator sees how connections spread and
that every worker enforces the same manifest version and recent collateral.

Nothing here is secret: counts, check names, manifest versions and expiry times. No peer
address or identity is a label (that would also let a stranger grow the label set).
"""

from __future__ import annotations

import datetime as dt
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class PrometheusObserver:
    """The metrics of one process; registered in ``registry``, or in the multiprocess files."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self._accepted = Counter(
            "teaclave_ma_handshakes_accepted",
            "Mutual RA-TLS handshakes whose peer passed every check",
            registry=registry,
        )
        self._refused = Counter(
            "teaclave_ma_handshakes_refused",
            "Handshakes and open connections refused, by the refusing check",
            ["check"],
            registry=registry,
        )
        self._cache = Counter(
            "teaclave_ma_peer_certificate_cache",
            "Peer certificate cache look-ups",
            ["result"],
            registry=registry,
        )
        self._latency = Histogram(
            "teaclave_ma_rpc_seconds",
            "Time to answer one RPC, by method",
            ["method"],
            registry=registry,
        )
        self._worker_accepted = Gauge(
            "teaclave_ma_worker_handshakes_accepted",
            "Handshakes accepted by this worker process",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self._version = Gauge(
            "teaclave_ma_manifest_version",
            "Version of the manifest in force in this process",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self._expires = Gauge(
            "teaclave_ma_manifest_expiry_timestamp_seconds",
            "When the manifest in force expires (Unix time)",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._collateral = Gauge(
            "teaclave_ma_collateral_expiry_timestamp_seconds",
            "When the collateral of the last peer quote this worker verified expires (Unix time)",
            registry=registry,
            multiprocess_mode="liveall",  # a process that verified none has 0: no min over all
        )

    def handshake_accepted(self) -> None:
        self._accepted.inc()
        self._worker_accepted.inc()

    def handshake_refused(self, check: str) -> None:
        self._refused.labels(check=check).inc()

    def certificate_cache(self, hit: bool) -> None:
        self._cache.labels(result="hit" if hit else "miss").inc()

    def rpc_served(self, method: str, seconds: float) -> None:
        self._latency.labels(method=method).observe(seconds)

    def manifest_in_force(self, version: int, expires: dt.datetime) -> None:
        self._version.set(version)
        self._expires.set(expires.timestamp())

    def collateral_expiry(self, next_update: dt.datetime) -> None:
        self._collateral.set(next_update.timestamp())


def exposition(observer: PrometheusObserver) -> bytes:
    """The text a scrape returns: every worker's samples in multiprocess mode, else this
    process's."""
    if MULTIPROCESS_DIR in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(observer.registry)


def worker_exited(pid: int) -> None:
    """Drop a finished worker's live gauges (multiprocess mode only)."""
    if MULTIPROCESS_DIR in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
