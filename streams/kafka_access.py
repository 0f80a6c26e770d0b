"""How every Kafka client of meterline reaches the cluster: bootstrap servers plus the
usual client security options (SASL PLAIN / SCRAM, TLS with a CA file, mTLS).

One `KafkaAccess` (from `Settings.kafka`) is turned into what each client takes:
- `client_config(...)`: librdkafka properties for confluent-kafka producers, consumers
  and the admin client (`bootstrap.servers`, `security.protocol`, `sasl.*`, `ssl.*`);
- `KafkaAccess.faust_credentials()`: faust's `broker_credentials` (aiokafka underneath).

A plain bootstrap string stands for a PLAINTEXT cluster (tests, benchmarks, the local
broker), so helpers take either.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT
from pydantic import SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaAccess:
    """Where the cluster is and how a client proves who it is (validated by `Settings`)."""

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """`127.0.0.1:9092 (SASL_SSL, SCRAM-SHA-512 as alice)`: no secret."""
        how: str = self.security_protocol
        if self.sasl:
            how += f", {self.sasl_mechanism} as {self.sasl_username}"
        if self.ssl_certificate_location is not None:
            how += f", client certificate {self.ssl_certificate_location}"
        return f"{self.bootstrap} ({how})"

    def librdkafka(self) -> dict[str, str]:
        """The librdkafka properties (confluent-kafka): bootstrap and security."""
        config = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.sasl:
            assert self.sasl_mechanism and self.sasl_username and self.sasl_password
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value()
        optional = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        for key, value in optional.items():
            if isinstance(value, SecretStr):
                config[key] = value.get_secret_value()
            elif value is not None:
                config[key] = str(value)
        return config

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of aiokafka (faust): the CA file (else the system's), and the
        client certificate for mTLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_ca_location) if self.ssl_ca_location else None
        )
        if self.ssl_certificate_location is not None:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            context.load_cert_chain(
                str(self.ssl_certificate_location),
                str(self.ssl_key_location) if self.ssl_key_location else None,
                password,
            )
        return context

    def faust_credentials(self) -> CredentialsT | None:
        """faust's `broker_credentials`; None for PLAINTEXT."""
        context = self.ssl_context()
        if self.sasl:
            assert self.sasl_password is not None
            return SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                ssl_context=context,
                mechanism=self.sasl_mechanism,
            )
        if context is not None:
            return SSLCredentials(context)
        return None


Kafka = KafkaAccess | str  # a bare bootstrap string: a PLAINTEXT cluster


def access_of(kafka: Kafka) -> KafkaAccess:
    return KafkaAccess(kafka) if isinstance(kafka, str) else kafka


def client_config(kafka: Kafka, **extra: Any) -> dict[str, Any]:
    """librdkafka properties for a confluent-kafka client of `kafka`, plus `extra`."""
    config: dict[str, Any] = dict(access_of(kafka).librdkafka())
    config.update(extra)
    return config
