"""Kafka security settings: validated with errors naming the variable, and handed alike to
confluent-kafka (librdkafka properties) and faust (aiokafka credentials)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from connectors.kafka.producer import producer_config
from connectors.stripe_sink.sink import StripeSink
from streams.app import create_app
from streams.settings import Settings, SettingsError, load_settings
from tests.tls import Authority

SCRAM = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "alice",
    "kafka_sasl_password": "s3cret",
}


def problems(**settings: object) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        load_settings(**settings)
    return raised.value.problems


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A client certificate and its key (PEM), made with openssl."""
    identity = Authority(tmp_path_factory.mktemp("tls")).issue("meterline-test")
    return identity.cert, identity.key


def test_sasl_without_username_and_password_names_both_variables() -> None:
    found = problems(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN")
    assert found == [
        "KAFKA_SASL_USERNAME is required with KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        "KAFKA_SASL_PASSWORD is required with KAFKA_SECURITY_PROTOCOL=SASL_SSL",
    ]


def test_an_unknown_sasl_mechanism_names_the_variable_and_the_choices() -> None:
    (found,) = problems(**(SCRAM | {"kafka_sasl_mechanism": "SCRAM-SHA-1"}))
    assert found.startswith("KAFKA_SASL_MECHANISM: ")
    assert "'SCRAM-SHA-256'" in found and "'SCRAM-SHA-512'" in found and "'PLAIN'" in found


def test_sasl_credentials_on_a_plaintext_protocol_are_refused_not_ignored() -> None:
    found = problems(kafka_sasl_username="alice", kafka_sasl_password="x")
    assert found == [
        "KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT: use SASL_SSL "
        "(or SASL_PLAINTEXT) for SASL",
        "KAFKA_SASL_PASSWORD is set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT: use SASL_SSL "
        "(or SASL_PLAINTEXT) for SASL",
    ]


def test_tls_files_must_exist_and_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    found = problems(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=tmp_path / "missing-ca.pem",
        kafka_ssl_certificate_location=tmp_path / "missing-cert.pem",
    )
    assert found == [
        f"KAFKA_SSL_CA_LOCATION: no readable file at {tmp_path / 'missing-ca.pem'}",
        f"KAFKA_SSL_CERTIFICATE_LOCATION: no readable file at {tmp_path / 'missing-cert.pem'}",
        "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together (mTLS needs both)",
    ]


def test_tls_files_with_a_plaintext_protocol_are_refused(certificate: tuple[Path, Path]) -> None:
    found = problems(kafka_ssl_ca_location=certificate[0])
    assert found == [
        "KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT: use SSL or "
        "SASL_SSL for TLS"
    ]


def test_the_protocol_and_mechanism_are_read_in_any_case() -> None:
    settings = load_settings(
        **(SCRAM | {"kafka_security_protocol": "sasl_ssl", "kafka_sasl_mechanism": "scram-sha-256"})
    )
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-256"


def test_the_environment_uses_the_conventional_kafka_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SCRAM.items():
        monkeypatch.setenv(name.upper(), value)
    assert Settings().kafka.sasl_username == "alice"


def test_producers_consumers_and_the_admin_client_get_the_same_security_properties() -> None:
    settings = load_settings(**SCRAM)
    expected = {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "s3cret",
    }
    assert producer_config(settings.kafka).items() >= expected.items()
    assert StripeSink(settings).consumer_config().items() >= expected.items()
    assert settings.kafka.librdkafka() == expected


def test_mtls_properties_name_the_files(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=cert,
        kafka_ssl_certificate_location=cert,
        kafka_ssl_key_location=key,
    )
    assert settings.kafka.librdkafka() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SSL",
        "ssl.ca.location": str(cert),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
    }
    credentials = settings.kafka.faust_credentials()
    assert isinstance(credentials, SSLCredentials)
    assert isinstance(credentials.context, ssl.SSLContext)
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED


def test_the_worker_hands_faust_the_sasl_credentials(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    settings = load_settings(**SCRAM, kafka_ssl_ca_location=certificate[0], data_dir=tmp_path)
    credentials = create_app(settings).conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("alice", "s3cret")
    assert credentials.ssl_context is not None


def test_a_plaintext_worker_has_no_credentials(tmp_path: Path) -> None:
    assert create_app(load_settings(data_dir=tmp_path)).conf.broker_credentials is None


def test_config_check_lists_every_security_problem_and_exits_2() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SSL_CA_LOCATION": "/nowhere/ca.pem",
    }
    done = subprocess.run(
        [sys.executable, "-m", "connectors.cli", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    text = " ".join(done.stderr.split())
    assert "KAFKA_SASL_USERNAME is required with KAFKA_SECURITY_PROTOCOL=SASL_SSL" in text
    assert "KAFKA_SASL_PASSWORD is required" in text
    assert "KAFKA_SSL_CA_LOCATION: no readable file at /nowhere/ca.pem" in text
