"""Liveness, readiness and metrics on a plain-HTTP port of their own (runtime.yaml
``health.listen``, host-supplied).

``GET /livez``: the process answers. ``GET /readyz``: 200 when a manifest is in force and
not expired and the service listens, 503 otherwise; the body says only that and the
manifest version. ``GET /metrics``: Prometheus text. Plain HTTP is fine: nothing here is
secret, and nothing a request sends changes anything.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@attrs.frozen
class Readiness:
    ready: bool
    manifest_version: int | None


class HealthServer:
    def __init__(
        self,
        address: tuple[str, int],
        readiness: Callable[[], Readiness],
        metrics: Callable[[], bytes],
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/livez": lambda: (200, "application/json", b'{"status": "up"}'),
            "/readyz": lambda: _ready_answer(readiness()),
            "/metrics": lambda: (200, PROMETHEUS_TEXT, metrics()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path)
                status, kind, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("health: " + format, *args)

        self._server = ThreadingHTTPServer(address, Handler)
        self._server.daemon_threads = True
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> tuple[str, int]:
        self._thread.start()
        log.info("health and metrics on http://%s:%d", *self.address)
        return self.address

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _ready_answer(readiness: Readiness) -> tuple[int, str, bytes]:
    body = json.dumps({"ready": readiness.ready, "manifest_version": readiness.manifest_version})
    return (200 if readiness.ready else 503), "application/json", body.encode()
