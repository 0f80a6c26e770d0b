"""Shared fixtures: one real Kafka broker per test session.

Order of preference: KAFKA_BOOTSTRAP_SERVERS (an existing cluster); testcontainers'
Kafka module when a Docker engine answers; otherwise the project's own launcher
(official jars from Maven Central, cached) on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.stack",
    "tests.fixtures.stripe",
    "tests.fixtures.worker",
]

# CI explores the same inputs on every run (a red CI is then a change, not a draw);
# locally every run draws anew and keeps finding what CI has not seen.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def _docker_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        # Tried here first: docker-py leaves the socket of a failed connection open.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError:
                return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:
        return False
    return True


def cache_dir() -> Path:
    return Path(os.environ.get("METERLINE_CACHE_DIR", Path.home() / ".cache" / "meterline"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    if _docker_reachable():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from connectors.kafka.broker import LocalKafka, free_port

    broker = LocalKafka(
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("kafka"),
        cache_dir=cache_dir(),
    )
    broker.start(timeout=120)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A short unique token for topic prefixes, app ids and group ids."""
    return uuid.uuid4().hex[:10]
