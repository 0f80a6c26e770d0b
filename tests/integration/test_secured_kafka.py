"""Every process on Kafka listeners that require SASL/SCRAM, or TLS with a client
certificate (mTLS): with credentials the CLI (topics, catalog), the worker (faust: group
join, changelogs), the HTTP edge and the Stripe sink work end to end; without them, with
a wrong password, or trusting another CA, each one exits with an error naming why,
within its connect timeout, instead of hanging.

The broker is the project's own (Apache Kafka 4.1.1, KRaft) with a SASL_PLAINTEXT and an
SSL listener beside its PLAINTEXT one; its SCRAM users are created when its storage is
formatted (`kafka-storage format --add-scram`); the certificates are made with openssl
(`tests/tls.py`).
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

from connectors.catalog_io import load_document, publish, read_live
from connectors.environment import process_env, setting_variables
from connectors.kafka.access import check_access
from connectors.kafka.admin import create_topics
from connectors.kafka.broker import LocalKafka, SaslListener, TlsListener, free_port
from streams.settings import load_settings
from streams.topics import CATALOG, Topics
from tests.conftest import cache_dir
from tests.stack import EXAMPLE_CATALOG, Stack
from tests.support import Process, eventually, try_get_json
from tests.tls import Authority, Identity

pytestmark = pytest.mark.integration

USER, PASSWORD = "meterline", "scram-secret"
CONNECT_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def client_certificate(authority: Authority) -> Identity:
    return authority.issue("meterline-client")


@pytest.fixture(scope="module")
def secured_kafka(
    tmp_path_factory: pytest.TempPathFactory, authority: Authority
) -> Iterator[LocalKafka]:
    broker = LocalKafka(
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("secured-kafka"),
        cache_dir=cache_dir(),
        heap="512m",
        sasl=SaslListener(free_port(), {USER: PASSWORD}),
        tls=TlsListener(
            free_port(), authority.issue("broker", ip="127.0.0.1").keystore, authority.cert
        ),
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


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_each_sasl_mechanism_authenticates_the_clients_built_from_settings(
    secured_kafka: LocalKafka, unique: str, mechanism: str
) -> None:
    settings = load_settings(
        kafka_bootstrap_servers=secured_kafka.sasl_bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        topic_prefix=f"m{unique}.",
    )
    check_access(settings.kafka, CONNECT_TIMEOUT_S)
    catalog = Topics.from_settings(settings).resolve(CATALOG)
    (outcome,) = create_topics(settings.kafka, [catalog])
    assert outcome.created
    publish(settings.kafka, catalog.name, load_document(EXAMPLE_CATALOG))
    assert "meter:api" in read_live(settings.kafka, catalog.name)


def mtls(authority: Authority, client: Identity) -> dict[str, str]:
    return setting_variables(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=authority.cert,
        kafka_ssl_certificate_location=client.cert,
        kafka_ssl_key_location=client.key,
    )


def test_every_process_connects_to_a_scram_listener_with_credentials(
    secured_kafka: LocalKafka, tmp_path: Path, stripe_sim: str
) -> None:
    run_the_pipeline(secured_kafka.sasl_bootstrap, credentials(), tmp_path, stripe_sim)


def test_every_process_connects_to_a_tls_listener_with_a_client_certificate(
    secured_kafka: LocalKafka,
    tmp_path: Path,
    stripe_sim: str,
    authority: Authority,
    client_certificate: Identity,
) -> None:
    run_the_pipeline(
        secured_kafka.tls_bootstrap, mtls(authority, client_certificate), tmp_path, stripe_sim
    )


def run_the_pipeline(bootstrap: str, security: dict[str, str], tmp_path: Path, sim: str) -> None:
    """Topics, catalog, worker, edge and sink on `bootstrap`: a measurement ingested is
    counted by the worker, and the sink takes its partitions."""
    stack = Stack(bootstrap, tmp_path, 3, False, **security)
    sink_port = free_port()
    sink = Process(
        ["stripe-sink"],
        stack.env | setting_variables(sink_port=sink_port, stripe_api_base=sim),
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
    secured_kafka: LocalKafka, tmp_path: Path
) -> None:
    env = process_env(
        kafka_bootstrap_servers=secured_kafka.sasl_bootstrap,
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
    secured_kafka: LocalKafka, tmp_path: Path
) -> None:
    env = process_env(
        kafka_bootstrap_servers=secured_kafka.sasl_bootstrap,
        kafka_connect_timeout_s=CONNECT_TIMEOUT_S,
        topic_prefix="anonymous.",
    )
    for name, done in run_all(env, tmp_path).items():
        assert done.returncode == 1, f"meterline {name}: {done.stdout}"
        text = " ".join(done.stdout.split())
        assert f"did not answer within {CONNECT_TIMEOUT_S}s" in text, done.stdout
        assert "likely requires SASL credentials or TLS" in text, f"{name}: {done.stdout}"


def test_without_a_client_certificate_every_process_exits_naming_the_tls_refusal(
    secured_kafka: LocalKafka, tmp_path: Path, authority: Authority
) -> None:
    env = process_env(
        kafka_bootstrap_servers=secured_kafka.tls_bootstrap,
        kafka_connect_timeout_s=CONNECT_TIMEOUT_S,
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=authority.cert,
        topic_prefix="uncertified.",
    )
    for name, done in run_all(env, tmp_path).items():
        assert done.returncode == 1, f"meterline {name}: {done.stdout}"
        text = " ".join(done.stdout.split())
        assert "refused this client" in text, f"meterline {name}: {done.stdout}"
        assert "bad certificate" in text, f"meterline {name}: {done.stdout}"


def test_a_broker_certificate_of_another_ca_makes_every_process_exit_naming_it(
    secured_kafka: LocalKafka, tmp_path: Path, client_certificate: Identity
) -> None:
    stranger = Authority(tmp_path, "another-ca")
    env = process_env(
        kafka_bootstrap_servers=secured_kafka.tls_bootstrap,
        kafka_connect_timeout_s=CONNECT_TIMEOUT_S,
        topic_prefix="untrusted.",
    ) | mtls(stranger, client_certificate)
    for name, done in run_all(env, tmp_path).items():
        assert done.returncode == 1, f"meterline {name}: {done.stdout}"
        text = " ".join(done.stdout.split())
        assert "certificate verify failed" in text, f"meterline {name}: {done.stdout}"
