"""Running the simulator: in the foreground (the CLI) or on a background thread (tests)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from connectors.stripe_sim.app import build_app
from connectors.stripe_sim.config import SimConfig
from connectors.waiting import eventually

_STARTUP_DEADLINE_S = 10.0


class _QuietDrops(logging.Filter):
    """Hides uvicorn's complaint about the responses that the "drop" fault cuts short."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


_QUIET_DROPS = _QuietDrops()


def _server(config: SimConfig, log_level: str) -> uvicorn.Server:
    logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)  # adding twice is a no-op
    settings = uvicorn.Config(
        build_app(config),
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(settings)


def serve(config: SimConfig, log_level: str = "info") -> None:
    """Serves until interrupted."""
    _server(config, log_level).run()


@contextmanager
def serve_in_thread(config: SimConfig | None = None, log_level: str = "warning") -> Iterator[str]:
    """Serves on a free loopback port (config.port is ignored); yields the base URL."""
    config = config or SimConfig()
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that say they are TCP; without it every response waits ~40 ms (delayed ACK).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((config.host, 0))
    port = listener.getsockname()[1]
    server = _server(config, log_level)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name=f"stripe-sim:{port}", daemon=True
    )
    thread.start()
    try:

        def started() -> bool:
            if not server.started and not thread.is_alive():
                raise RuntimeError("the Stripe simulator did not start")
            return bool(server.started)

        try:
            eventually(started, _STARTUP_DEADLINE_S, 0.01, "the Stripe simulator to start")
        except TimeoutError:
            raise RuntimeError("the Stripe simulator did not start") from None
        yield f"http://{config.host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
