"""Every process on a Kafka listener that requires SASL/SCRAM: with credentials the CLI
(topics, catalog), the worker (faust: group join, changelogs), the HTTP edge and the
Stripe sink work end to end; without them, or with a wrong password, each one exits with
an error naming why, within its connect timeout, instead of hanging.

The broker is the project's own (Apache Kafka 4.1.1, KRaft) with a SASL_PLAINTEXT
listener beside its PLAINTEXT one; its SCRAM users are created when its storage is
formatted (`kafka-storage format --add-scram`).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.environment import process_env, setting_variables
from connectors.kafka.broker import LocalKafka, ScramListener, free_port
from tests.conftest import cache_dir
from tests.stack import EXAMPLE_CATALOG, Stack
from tests.support import Process, eventually, try_get_json

pytestmark = pytest.mark.integration

USER, PASSWORD = "meterline", "scram-secret"
CONNECT_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("scram-kafka"),
        cache_dir=cache_dir(),
        heap="512m",
        sasl=ScramListener(free_port(), {USER: PASSWORD}),
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def credentials(password: str = PASSWORD, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return setting_variables(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=USER,
        kafka_sasl_password=password,
    )


def test_every_process_connects_to_a_scram_listener_with_credentials(
    scram_kafka: LocalKafka, tmp_path: Path, stripe_sim: str
) -> None:
    stack = Stack(scram_kafka.sasl_bootstrap, tmp_path, 3, False, **credentials())
    sink_port = free_port()
    sink = Process(
        ["stripe-sink"],
        stack.env | setting_variables(sink_port=sink_port, stripe_api_base=stripe_sim),
        tmp_path / "sink.log",
    )
    try:
        stack.cli("topics", "create")
        stack.cli("catalog", "apply", str(EXAMPLE_CATALOG))
        stack.start_worker()  # its healthz counts the catalog items faust read
        stack.start_http()
        sink.start()
        ts = datetime.now(UTC) - timedelta(minutes=5)
        measurement = {
            "uid": uuid.uuid4().hex,
            "meter": "api",
            "account": "acme",
            "ts": ts.isoformat(),
            "measure": {"calls": 7},
        }
        with stack.client() as client:
            accepted = client.post(
                f"{stack.api}/measurements", json={"measurements": [measurement]}
            )
            assert accepted.status_code == 200, accepted.text  # acknowledged over SASL

            def counted() -> Decimal | None:
                answer = client.post(
                    f"{stack.api}/usage/query",
                    json={
                        "startDate": (ts - timedelta(days=1)).isoformat(),
                        "endDate": (ts + timedelta(days=1)).isoformat(),
                        "accountIds": ["acme"],
                        "aggregations": ["api_calls"],
                    },
                )
                rows = answer.json().get("data") if answer.status_code == 200 else None
                return Decimal(rows[0]["value"]) if rows else None

            assert eventually(counted, timeout=60) == 7  # the worker read it over SASL
        health = f"http://127.0.0.1:{sink_port}/healthz"
        eventually(lambda: (try_get_json(health) or {}).get("assigned"), timeout=60)
        assert sink.alive(), sink.log_tail()
    finally:
        sink.stop()
        stack.stop()


COMMANDS = (["topics", "create"], ["catalog", "show"], ["worker"], ["http"], ["stripe-sink"])


def run_all(env: dict[str, str], tmp_path: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every command at once; each must exit by itself (a hang fails the test)."""
    started = {
        " ".join(args): subprocess.Popen(
            [sys.executable, "-m", "connectors.cli", *args],
            env=env | setting_variables(data_dir=tmp_path, http_port=free_port()),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args in COMMANDS
    }
    done = {}
    for name, process in started.items():
        try:
            output, _ = process.communicate(timeout=CONNECT_TIMEOUT_S + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            raise AssertionError(f"meterline {name} hung:\n{output}") from None
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, output)
    return done


def test_a_wrong_password_makes_every_process_exit_naming_the_refusal(
    scram_kafka: LocalKafka, tmp_path: Path
) -> None:
    env = process_env(
        kafka_bootstrap_servers=scram_kafka.sasl_bootstrap,
        kafka_connect_timeout_s=CONNECT_TIMEOUT_S,
        topic_prefix="refused.",
    ) | credentials(password="not-the-password", mechanism="SCRAM-SHA-256")
    started = time.monotonic()
    for name, done in run_all(env, tmp_path).items():
        assert done.returncode == 1, f"meterline {name}: {done.stdout}"
        text = " ".join(done.stdout.split())
        assert "refused this client" in text, f"meterline {name}: {done.stdout}"
        assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in text, done.stdout
        assert "not-the-password" not in done.stdout  # the secret is never printed
    assert time.monotonic() - started < 60


def test_no_credentials_makes_every_process_exit_saying_the_listener_wants_them(
    scram_kafka: LocalKafka, tmp_path: Path
) -> None:
    env = process_env(
        kafka_bootstrap_servers=scram_kafka.sasl_bootstrap,
        kafka_connect_timeout_s=CONNECT_TIMEOUT_S,
        topic_prefix="anonymous.",
    )
    for name, done in run_all(env, tmp_path).items():
        assert done.returncode == 1, f"meterline {name}: {done.stdout}"
        text = " ".join(done.stdout.split())
        assert f"did not answer within {CONNECT_TIMEOUT_S}s" in text, done.stdout
        assert "likely requires SASL credentials or TLS" in text, f"{name}: {done.stdout}"
