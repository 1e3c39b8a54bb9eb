"""``teaclave-ma serve``: run one service image for real."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from teaclave_ma.cli.output import EXIT_OK, say
from teaclave_ma.enclave.image import load_image
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.runtime.service_runtime import ServiceRuntime


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


def _serve(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    runtime_config = parse_runtime_config(
        args.config.read_bytes(), args.config.parent, str(args.config)
    )
    runtime = ServiceRuntime(
        image,
        runtime_config,
        args.manifest,
        args.signatures,
        initialize_state=args.initialize_state,
    )
    host, port = runtime.start()
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
