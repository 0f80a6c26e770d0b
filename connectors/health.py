"""A tiny health and metrics HTTP server for processes that are not HTTP apps (the sink)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from connectors.metrics import CONTENT_TYPE_LATEST, Metrics


def serve_health(
    host: str, port: int, metrics: Metrics, status: Callable[[], dict[str, object]]
) -> ThreadingHTTPServer:
    """Serve GET /healthz (JSON from `status`, 200 when status['status'] == 'ok') and /metrics."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                body = status()
                payload = json.dumps(body).encode()
                code = 200 if body.get("status") == "ok" else 503
                self._send(code, payload, "application/json")
            elif self.path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b'{"error":"not found"}', "application/json")

        def _send(self, code: int, payload: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
