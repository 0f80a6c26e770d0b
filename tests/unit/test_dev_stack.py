"""`meterline dev`: the Stripe simulator when Stripe is not configured; health changes told."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from connectors.dev import Child, DevStack, probe
from connectors.kafka.broker import free_port
from streams.settings import load_settings

STALLED = {
    "status": "stalled",
    "stalls": [{"kind": "send", "what": "3 sends not acknowledged by Kafka", "seconds": 71.2}],
}


def stack(tmp_path: Path, **settings: object) -> tuple[DevStack, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=200)
    return DevStack(load_settings(data_dir=tmp_path, **settings), console=console), out


def test_without_a_stripe_key_the_simulator_runs_and_the_sink_writes_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("STRIPE_API_KEY", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    dev, out = stack(tmp_path, http_port=8123)
    dev.add_defaults()
    children = {child.name: child for child in dev.children}
    assert set(children) == {"stripe-sim", "worker", "http", "stripe-sink"}
    env = dev.child_env()
    sim = children["stripe-sim"]
    assert sim.health_url == f"{env['STRIPE_API_BASE']}/_sim/stats"
    assert sim.argv[-4:] == [
        "--port",
        env["STRIPE_API_BASE"].rsplit(":", 1)[1],
        "--webhook-url",
        "http://127.0.0.1:8123/webhooks/stripe",
    ]
    assert env["STRIPE_API_KEY"].startswith("sk_test_")
    assert env["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")  # the simulator signs, the edge checks
    assert "the Stripe simulator runs at" in out.getvalue()


def test_with_a_stripe_key_no_simulator_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_API_BASE", raising=False)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_real")
    dev, _ = stack(tmp_path)
    dev.add_defaults()
    assert [c.name for c in dev.children] == ["worker", "http", "stripe-sink"]
    assert dev.child_env()["STRIPE_API_KEY"] == "sk_test_real"


@pytest.fixture
def health() -> Iterator[tuple[str, dict[str, object]]]:
    """A health endpoint whose answer the test sets: (url, state)."""
    state: dict[str, object] = {"code": 200, "body": {"status": "ok"}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = json.dumps(state["body"]).encode()
            self.send_response(int(state["code"]))  # type: ignore[call-overload]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/healthz", state
    server.shutdown()
    server.server_close()


def test_a_stalled_worker_is_unhealthy_with_its_reason(
    health: tuple[str, dict[str, object]],
) -> None:
    url, state = health
    assert probe(url) == (True, "")
    state.update(code=503, body=STALLED)
    assert probe(url) == (False, "3 sends not acknowledged by Kafka for 71s")
    ok, reason = probe(f"http://127.0.0.1:{free_port()}/healthz")
    assert not ok
    assert reason.startswith("no answer from")


class Running:
    returncode = None

    def poll(self) -> None:
        return None


def test_the_dev_stack_reports_a_process_turning_unhealthy_and_recovering(
    tmp_path: Path, health: tuple[str, dict[str, object]]
) -> None:
    url, state = health
    dev, out = stack(tmp_path)
    worker = Child("worker", [], url, process=Running(), healthy=True)  # type: ignore[arg-type]
    dev.children.append(worker)
    state.update(code=503, body=STALLED)
    dev._check(worker)
    assert "worker is unhealthy: 3 sends not acknowledged by Kafka for 71s" in out.getvalue()
    assert dev.problems() == ["worker is unhealthy: 3 sends not acknowledged by Kafka for 71s"]
    state.update(code=200, body={"status": "ok"})
    dev._check(worker)
    assert "worker is healthy again" in out.getvalue()
    assert dev.problems() == []
