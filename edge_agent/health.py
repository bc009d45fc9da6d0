"""A small HTTP endpoint per service: ``/health`` (JSON) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

HealthFn = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """Serves ``/health`` (200 when healthy, 503 otherwise, with details) and ``/metrics``."""

    def __init__(self, *, host: str, port: int, health: HealthFn) -> None:
        check = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif self.path.split("?")[0] in ("/health", "/healthz", "/"):
                    ok, details = check()
                    body = json.dumps({"status": "ok" if ok else "degraded", **details}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(
                        404, b'{"error": "not found: try /health or /metrics"}', "application/json"
                    )

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # access logs would drown the structured log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
