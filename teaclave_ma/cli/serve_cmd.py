"""``teaclave-ma serve``: run one service image for real."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from teaclave_ma.cli.output import EXIT_OK, EXIT_REFUSED, say
from teaclave_ma.enclave.image import EnclaveImage, load_image
from teaclave_ma.errors import ConfigError, TeaclaveMAError
from teaclave_ma.formats.runtime_config import RuntimeConfig, parse_runtime_config
from teaclave_ma.observability.events import Observer
from teaclave_ma.observability.health import HealthServer, Readiness
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.runtime.workers import WorkerPool, default_workers

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run a service image with peer-attested RPC")
    serve.add_argument("image", type=Path, help="built enclave image directory")
    serve.add_argument("--manifest", type=Path, required=True, help="the signed manifest")
    serve.add_argument("--signatures", type=Path, required=True, help="its signature directory")
    serve.add_argument("--config", type=Path, required=True, help="runtime.yaml of this deployment")
    add_initialize_state_flag(serve)
    serve.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        help="server processes on the one port (default: the cores this process may use)",
    )
    serve.set_defaults(func=_serve)


def _positive(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def add_initialize_state_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--initialize-state",
        action="store_true",
        help="first start only: create the sealed state (refused if one exists; without "
        "this flag a missing state is refused)",
    )


class ServiceCodeError(ConfigError):
    """The image's own code failed while the service was being built (import or build())."""


def _code_failure(image: EnclaveImage, exc: Exception) -> ServiceCodeError:
    # Name the innermost line of the service's own code, not a traceback through ours.
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).is_relative_to(image.code_dir)
    ]
    where = f" at {Path(frames[-1].filename).name}, line {frames[-1].lineno}" if frames else ""
    return ServiceCodeError(
        image.service.name,
        f"its code failed while starting{where}: {type(exc).__name__}: {exc}",
    )


def _runtime(
    image: EnclaveImage, config: RuntimeConfig, args: argparse.Namespace, observer: Observer
) -> ServiceRuntime:
    try:
        return ServiceRuntime(
            image,
            config,
            args.manifest,
            args.signatures,
            initialize_state=args.initialize_state,
            observer=observer,
        )
    except TeaclaveMAError:
        raise
    except Exception as exc:
        log.debug("service %s failed to start", image.service.name, exc_info=True)
        raise _code_failure(image, exc) from exc


def _serve(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    runtime_config = parse_runtime_config(
        args.config.read_bytes(), args.config.parent, str(args.config)
    )
    # Every worker writes its metrics here and the parent's scrape adds them up; it must be
    # named before prometheus-client is first imported (below), and is this run's alone.
    metrics_dir = tempfile.mkdtemp(prefix="teaclave-ma-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _serve_with_metrics(image, runtime_config, args)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_with_metrics(
    image: EnclaveImage, runtime_config: RuntimeConfig, args: argparse.Namespace
) -> int:
    from teaclave_ma.observability import metrics  # noqa: PLC0415 - after the directory is set

    observer = metrics.PrometheusObserver()
    runtime = _runtime(image, runtime_config, args, observer)
    if image.service.name not in runtime.manifest.manifest.enclaves:
        log.warning(
            "manifest v%d has no entry for %s: every peer will refuse it until a manifest "
            "that accepts it is in force",
            runtime.manifest.version,
            image.service.name,
        )
    pool = WorkerPool(runtime, args.workers, on_exit=metrics.worker_exited)
    try:
        host, port = pool.start()
    except OSError as exc:
        pool.stop()
        raise _cannot_listen("listen", runtime_config.listen, exc) from exc
    except TeaclaveMAError:
        pool.stop()
        raise
    health = None
    if runtime_config.health is not None:
        try:
            health = HealthServer(
                runtime_config.health.listen,
                lambda: _readiness(runtime),
                lambda: metrics.exposition(observer),
            )
        except OSError as exc:
            pool.stop()
            raise _cannot_listen("health.listen", runtime_config.health.listen, exc) from exc
        health.start()
    stopped = threading.Event()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        runtime.reload_manifest()

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGHUP, on_hangup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    say(
        f"{image.service.name} serving on {host}:{port} "
        f"(mr_enclave {image.identity.mr_enclave.hex()[:16]}..., manifest v{runtime.manifest.version})"
    )
    # One machine-readable line on stdout tells a supervisor (or the demo) that we are up.
    ready: dict[str, Any] = {"ready": image.service.name, "host": host, "port": port}
    ready["workers"] = pool.pids
    if health is not None:
        ready["health"] = "{}:{}".format(*health.address)
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    clean = pool.run(stopped)
    if health is not None:
        health.stop()
    pool.stop()
    if not clean:
        say(f"{image.service.name} stopped: a worker died")
        return EXIT_REFUSED
    say(f"{image.service.name} stopped")
    return EXIT_OK


def _cannot_listen(field: str, address: tuple[str, int], exc: OSError) -> ConfigError:
    # socket.create_server appends the address to strerror; say it once, our way.
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ConfigError(field, "cannot listen on {}:{}: {}".format(*address, reason))


def _readiness(runtime: ServiceRuntime) -> Readiness:
    """Ready: a manifest in force and not expired (the keeper refuses an expired one), and
    every worker listening (the pool has started them all before this is served)."""
    try:
        manifest = runtime.keeper.current()
    except TeaclaveMAError:
        return Readiness(ready=False, manifest_version=None)
    return Readiness(ready=True, manifest_version=manifest.version)
