"""``teaclave-ma serve``: run one service image for real."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from teaclave_ma.cli.output import EXIT_OK, say
from teaclave_ma.enclave.image import EnclaveImage, load_image
from teaclave_ma.errors import ConfigError, TeaclaveMAError
from teaclave_ma.formats.runtime_config import RuntimeConfig, parse_runtime_config
from teaclave_ma.runtime.service_runtime import ServiceRuntime

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run a service image with peer-attested RPC")
    serve.add_argument("image", type=Path, help="built enclave image directory")
    serve.add_argument("--manifest", type=Path, required=True, help="the signed manifest")
    serve.add_argument("--signatures", type=Path, required=True, help="its signature directory")
    serve.add_argument("--config", type=Path, required=True, help="runtime.yaml of this deployment")
    add_initialize_state_flag(serve)
    serve.set_defaults(func=_serve)


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
    image: EnclaveImage, config: RuntimeConfig, args: argparse.Namespace
) -> ServiceRuntime:
    try:
        return ServiceRuntime(
            image, config, args.manifest, args.signatures, initialize_state=args.initialize_state
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
    runtime = _runtime(image, runtime_config, args)
    if image.service.name not in runtime.manifest.manifest.enclaves:
        log.warning(
            "manifest v%d has no entry for %s: every peer will refuse it until a manifest "
            "that accepts it is in force",
            runtime.manifest.version,
            image.service.name,
        )
    try:
        host, port = runtime.start()
    except OSError as exc:
        runtime.stop()
        listen = "{}:{}".format(*runtime_config.listen)
        # socket.create_server appends the address to strerror; say it once, our way.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError("listen", f"cannot listen on {listen}: {reason}") from exc
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
    sys.stdout.write(json.dumps({"ready": image.service.name, "host": host, "port": port}) + "\n")
    sys.stdout.flush()
    stopped.wait()
    runtime.stop()
    say(f"{image.service.name} stopped")
    return EXIT_OK
