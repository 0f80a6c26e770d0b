"""A process's first contact with Kafka: connected with its credentials, or a clear error.

A librdkafka client that cannot authenticate, or that speaks PLAINTEXT to a SASL or TLS
listener, retries quietly for ever. Every process checks once at start (`check_access`)
and exits naming the cluster, how it connected and what the brokers answered, instead
of hanging.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streams.kafka_access import KafkaAccess, client_config

# Errors after which waiting longer cannot help: the brokers refused who we are.
REFUSED = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.UNSUPPORTED_SASL_MECHANISM,
    KafkaError.ILLEGAL_SASL_STATE,
    KafkaError._SSL,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}
SETTINGS_HINT = (
    "check KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, "
    "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD and the KAFKA_SSL_* files "
    "(`meterline config check`)"
)


class KafkaAccessError(RuntimeError):
    """Kafka refused this process, or did not answer it in time; the message says which."""


def check_access(kafka: KafkaAccess, timeout: float) -> None:
    """Return once a broker answers a metadata request made with `kafka`'s credentials.

    Raises KafkaAccessError at once when the brokers refuse the credentials or the TLS
    handshake, and after `timeout` seconds when they do not answer, with the last error
    the client saw (librdkafka says e.g. "broker might require SASL authentication").
    """
    seen: list[KafkaError] = []
    logs = _Collected()
    admin = AdminClient(client_config(kafka, error_cb=seen.append, logger=logs))
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            if admin.list_topics(timeout=max(0.1, min(1.0, remaining))).brokers:
                return
        except KafkaException as exc:
            seen.append(exc.args[0])
        admin.poll(0)  # serves error_cb
        refused = [error for error in seen if error.code() in REFUSED or _tls_alert(error)]
        if refused:
            raise KafkaAccessError(
                f"Kafka at {kafka.describe()} refused this client: {refused[-1].str()}; "
                + SETTINGS_HINT
            )
        if remaining <= 0:
            raise KafkaAccessError(
                f"Kafka at {kafka.describe()} did not answer within {timeout:g}s: "
                f"{_what_was_seen(kafka, seen, logs.failures)}; " + SETTINGS_HINT
            )


def _tls_alert(error: KafkaError) -> bool:
    """The broker ended the TLS handshake with an alert (e.g. "bad certificate": no
    client certificate, or one it does not trust): a refusal, not a network fault."""
    return "ssl/tls alert" in error.str().lower()


def _what_was_seen(kafka: KafkaAccess, seen: list[KafkaError], failures: list[str]) -> str:
    """What the client saw: the last connection failure it logged, its distinct errors,
    and what a broker closing the connection at once means without SASL or TLS."""
    texts = list(dict.fromkeys([*failures[-1:], *(error.str() for error in seen)]))
    said = " | ".join(texts[:3]) or "no broker answered"
    if any("closed by peer" in failure for failure in failures) and not kafka.sasl:
        said += (
            " (the brokers close the connection of a client that does not authenticate: "
            "the listener likely requires SASL credentials or TLS)"
        )
    return said


class _Collected(logging.Logger):
    """librdkafka's log lines about failed connections (nothing is printed)."""

    def __init__(self) -> None:
        super().__init__("librdkafka.check", level=logging.DEBUG)
        self.failures: list[str] = []

    def handle(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Disconnected" in message or "failed" in message:
            self.failures.append(message.split("]: ", 1)[-1])
