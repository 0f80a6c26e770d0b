"""The one settings object: read once at the edge, passed inward, never re-read.

Environment: `METERLINE_*`, plus the conventional `KAFKA_BOOTSTRAP_SERVERS`,
`STRIPE_API_KEY`, `STRIPE_WEBHOOK_SECRET` (comma-separated for rotation) and
`STRIPE_API_BASE`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.kafka_access import KafkaAccess, SaslMechanism, SecurityProtocol
from streams.schemas.errors import problems

CommaList = Annotated[tuple[str, ...], NoDecode]
CommaSecrets = Annotated[tuple[SecretStr, ...], NoDecode]
StripeMode = Literal["invoice", "subscription"]
ModeOverrides = Annotated[
    dict[Annotated[str, Field(pattern=r"^(plan|account):\S+$")], StripeMode], NoDecode
]


def _kafka(name: str) -> AliasChoices:
    """`KAFKA_<name>` (the conventional variable) or `METERLINE_KAFKA_<name>`."""
    return AliasChoices(f"KAFKA_{name}", f"METERLINE_KAFKA_{name}")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="METERLINE_",
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,  # docker compose passes unset variables as ""
    )

    org_id: str = Field(
        default="demo",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$",
        description="The organization this deployment serves (the {orgId} of the API paths).",
    )
    api_keys: CommaSecrets = Field(
        default=(), description="Comma-separated Bearer keys accepted by the HTTP API."
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A YAML/JSON file of API keys with scopes (ingest, read, admin) and "
        "organization, re-read when it changes (rotation without restart); see README.",
    )
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP edge binds.")
    http_port: int = Field(default=8080, ge=1, le=65535, description="Port of the HTTP edge.")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "METERLINE_KAFKA_BOOTSTRAP_SERVERS"
        ),
        pattern=r"^[^,\s]+:\d+(,[^,\s]+:\d+)*$",
        description="Comma-separated host:port list of the Kafka cluster.",
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        validation_alias=_kafka("SECURITY_PROTOCOL"),
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS).",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        validation_alias=_kafka("SASL_MECHANISM"),
        description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol).",
    )
    kafka_sasl_username: str | None = Field(
        default=None, validation_alias=_kafka("SASL_USERNAME"), description="SASL user name."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias=_kafka("SASL_PASSWORD"), description="SASL password."
    )
    kafka_ssl_ca_location: Path | None = Field(
        default=None,
        validation_alias=_kafka("SSL_CA_LOCATION"),
        description="CA certificate file (PEM) the brokers' certificates are checked "
        "against; unset = the system's CAs.",
    )
    kafka_ssl_certificate_location: Path | None = Field(
        default=None,
        validation_alias=_kafka("SSL_CERTIFICATE_LOCATION"),
        description="Client certificate (PEM) for mTLS.",
    )
    kafka_ssl_key_location: Path | None = Field(
        default=None,
        validation_alias=_kafka("SSL_KEY_LOCATION"),
        description="Private key (PEM) of the client certificate.",
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None,
        validation_alias=_kafka("SSL_KEY_PASSWORD"),
        description="Password of the client key, if it is encrypted.",
    )
    kafka_connect_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a process waits at start for Kafka to answer before it exits "
        "naming why (unreachable, or credentials refused).",
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._\-]*$",
        description="Prefix of every topic name (one cluster, several deployments).",
    )
    partitions: int = Field(
        default=6, ge=1, le=1000, description="Partitions of every per-account topic."
    )
    replication_factor: int = Field(default=1, ge=1, le=7, description="Topic replication.")
    app_id: str = Field(
        default="meterline",
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="faust application id: consumer group and changelog topic prefix.",
    )
    store: Literal["memory", "rocksdb"] = Field(
        default="memory",
        description="faust table store and the usage engine's uid memory: memory (dev, "
        "tests) or rocksdb (uids of the dedup horizon on disk under data_dir, memory "
        "bounded; the worker then runs the Python usage engine).",
    )
    rocksdb_block_cache_mb: int = Field(
        default=64,
        ge=8,
        description="rocksdb block cache per partition of faust's tables (faust defaults "
        "2 GiB), and of the usage engine's uid memory in all.",
    )
    rocksdb_write_buffer_mb: int = Field(
        default=64,
        ge=4,
        description="rocksdb memtables (write buffers) of the usage engine's uid memory, in all.",
    )
    data_dir: Path = Field(
        default=Path(".meterline"), description="Local state: worker data, uploads, logs."
    )
    worker_web_port: int = Field(
        default=6066, ge=1, le=65535, description="faust worker web port (read API, health)."
    )
    worker_web_host: str = Field(default="127.0.0.1", description="faust worker web address.")
    standby_replicas: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Standby copies of each table partition kept warm on other workers "
        "(faust's table_standby_replicas): faster fail-over, at the memory of each copy "
        "(counted in /healthz `tables`).",
    )
    worker_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Where the HTTP edge reaches a worker for reads (faust routes to the "
        "owner); several, comma-separated, are tried in turn when one refuses the "
        "connection; default http://<worker_web_host>:<worker_web_port>.",
    )
    worker_stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A worker whose agent has input it does not acknowledge, whose "
        "committed offset of an input partition stays still while messages follow it, or "
        "whose rebalance does not finish, for this long reports itself stalled (/healthz 503).",
    )
    worker_send_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A worker with a Kafka send or offset commit unfinished for this long "
        "reports itself stalled (/healthz 503).",
    )
    worker_stop_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="Longest clean stop of a worker; past it the worker exits at once, "
        "naming what was stuck (its unacknowledged events are processed again).",
    )
    sink_port: int = Field(
        default=8082, ge=1, le=65535, description="Stripe sink health and metrics port."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of every process."
    )

    stripe_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_KEY", "METERLINE_STRIPE_API_KEY"),
        description="Stripe secret key; unset means the local Stripe simulator.",
    )
    stripe_webhook_secrets: CommaSecrets = Field(
        default=(),
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "METERLINE_STRIPE_WEBHOOK_SECRET"),
        description="Webhook signing secrets, comma-separated (several during rotation).",
    )
    stripe_api_base: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_BASE", "METERLINE_STRIPE_API_BASE"),
        pattern=r"^https?://",
        description="Base URL of a Stripe stand-in (the simulator); unset = api.stripe.com.",
    )
    stripe_webhook_tolerance_s: int = Field(
        default=300, ge=1, description="Accepted age of a webhook signature timestamp."
    )

    # -- Stripe sink (connectors/stripe_sink): how bills become Stripe invoice items ------
    stripe_mode: StripeMode = Field(
        default="invoice",
        description="invoice: a draft invoice per bill; subscription: pending items that the "
        "subscription's next invoice pulls in.",
    )
    stripe_mode_overrides: ModeOverrides = Field(
        default_factory=dict,
        description='Mode per account or plan, e.g. "plan:pro=subscription,account:cus_1=invoice" '
        "(account wins over plan).",
    )
    stripe_trigger: Literal["every-version", "approved-only"] = Field(
        default="every-version",
        description="Sync every bill version, or only once the bill is APPROVED or LOCKED.",
    )
    stripe_finalize_on_approval: bool = Field(
        default=False, description="Invoice mode: finalize the invoice once the bill is approved."
    )
    stripe_collection_method: Literal["charge_automatically", "send_invoice"] = Field(
        default="charge_automatically", description="Collection method of the invoices created."
    )
    stripe_days_until_due: int = Field(
        default=30, ge=1, le=3650, description="Days until due, for send_invoice invoices."
    )
    stripe_rate_limit: float | None = Field(
        default=None,
        ge=0,
        description="Stripe requests per second of one sink process; 0 = no limit; unset = 20 "
        "with a test key or a Stripe stand-in, 80 live (Stripe allows 25 and 100).",
    )
    stripe_request_timeout_s: float = Field(
        default=20.0, gt=0, le=120, description="Timeout of one Stripe request."
    )
    stripe_retry_base_s: float = Field(
        default=0.5, gt=0, description="First retry delay after a 429, 5xx or network error."
    )
    stripe_retry_max_s: float = Field(
        default=60.0, gt=0, description="Longest delay between retries (before jitter)."
    )
    stripe_retry_max_attempts: int = Field(
        default=30,
        ge=1,
        description="Attempts of one bill version before it is dead-lettered to "
        "stripe.sync.conflicts.",
    )
    stripe_sink_instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Kafka static membership (group.instance.id) of this sink process: "
        "restarted, it takes its partitions back without a rebalance. Unique per process.",
    )

    kafka_version: str = Field(
        default="4.1.1",
        pattern=r"^\d+\.\d+\.\d+$",
        description="Apache Kafka version the local broker runs (from Maven Central).",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "meterline",
        description="Where the local broker's jars are cached between runs.",
    )

    max_measurements_per_request: int = Field(
        default=1000, ge=1, description="Most measurements in one ingest request (m3ter: 1,000)."
    )
    max_request_bytes: int = Field(
        default=512_000, ge=1024, description="Largest ingest request body (m3ter: 512,000 bytes)."
    )
    dedup_horizon_days: int = Field(default=35, ge=35, description="uid de-duplication horizon.")
    max_future_skew_s: int = Field(
        default=3600, ge=0, description="How far in the future a measurement ts may be."
    )
    usage_batch_messages: int = Field(
        default=500, ge=1, description="Messages the usage agent folds per batch."
    )
    usage_batch_within_s: float = Field(
        default=0.1, gt=0, description="Longest wait for a usage batch to fill (latency bound)."
    )
    usage_batches_in_flight: int = Field(
        default=4,
        ge=1,
        description=(
            "Usage batches processed ahead while Kafka acknowledges the writes of earlier "
            "ones (a batch is acked only once its writes and all before it are)."
        ),
    )
    usage_intake: Literal["bulk", "stream"] = Field(
        default="bulk",
        description=(
            "How measurements reach the usage engine: bulk (whole fetches per partition, "
            "straight from the consumer) or stream (faust's per-event stream; slower)."
        ),
    )
    usage_sweep_interval_s: float = Field(
        default=600.0, gt=0, description="How often usage retention runs."
    )
    usage_snapshot_interval_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How often the usage engine writes the account-hours changed since its last "
            "snapshot, so the deltas before it can be tombstoned (bounds recovery time)."
        ),
    )
    alert_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often accounts whose usage changed are measured against the alert rules.",
    )
    alert_accounts_per_round: int = Field(
        default=500,
        gt=0,
        description="Most accounts measured per alert round (the rest wait for the next).",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Where `meterline alert-webhooks` POSTs each alert; unset = no webhooks.",
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None, description="Secret the alert webhooks are signed with (HMAC-SHA256)."
    )
    alert_webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Timeout of one alert webhook request."
    )
    alert_webhook_retry_base_s: float = Field(
        default=0.5, gt=0, description="First delay before an alert webhook is sent again."
    )
    alert_webhook_retry_max_s: float = Field(
        default=60.0, gt=0, le=240, description="Longest delay between alert webhook attempts."
    )
    bill_run_interval_s: float = Field(
        default=300.0, gt=0, description="How often bills are regenerated during the period."
    )
    bill_grace_period_s: int = Field(
        default=86_400, ge=0, description="After a period ends, how long its bill stays open."
    )
    bill_auto_approve: bool = Field(
        default=False, description="Approve bills whose period ended more than the grace ago."
    )
    bill_auto_lock: bool = Field(
        default=False, description="Lock approved bills whose period ended more than the grace ago."
    )
    usage_retention_days: int = Field(
        default=400, ge=35, description="How long hourly usage state is kept, by event time."
    )
    engine: Literal["auto", "native", "python"] = Field(
        default="auto",
        description=(
            "Usage engine: native (Rust) when installed, python (the reference), or auto "
            "(native when importable, else python)."
        ),
    )
    engine_threads: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1),
        ge=1,
        le=64,
        description=(
            "Threads the native usage engine folds a batch on (each holds a share of the "
            "partitions); default: the CPU count, at most 2."
        ),
    )

    @field_validator("api_keys", "stripe_webhook_secrets", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("stripe_mode_overrides", mode="before")
    @classmethod
    def _mode_overrides(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = {}
        for entry in _split(value):
            scope, equals, mode = entry.partition("=")
            if not equals:
                raise ValueError(f"{entry!r} is not <plan|account>:<code>=<mode>")
            pairs[scope.strip()] = mode.strip()
        return pairs

    @field_validator("stripe_trigger", mode="before")
    @classmethod
    def _trigger_aliases(cls, value: Any) -> Any:
        return {"every": "every-version", "approved": "approved-only"}.get(value, value)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _across_settings(self) -> Settings:
        problems = cross_setting_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def kafka(self) -> KafkaAccess:
        """How every Kafka client of this process reaches the cluster."""
        return KafkaAccess(
            bootstrap=self.kafka_bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_ca_location=self.kafka_ssl_ca_location,
            ssl_certificate_location=self.kafka_ssl_certificate_location,
            ssl_key_location=self.kafka_ssl_key_location,
            ssl_key_password=self.kafka_ssl_key_password,
        )

    @property
    def stripe_requests_per_second(self) -> float | None:
        """The sink's Stripe request rate limit; None = unlimited."""
        if self.stripe_rate_limit is not None:
            return self.stripe_rate_limit or None
        key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
        live = key.startswith(("sk_live_", "rk_live_")) and self.stripe_api_base is None
        return 80.0 if live else 20.0

    @property
    def worker_base_url(self) -> str:
        return self.worker_url or f"http://{self.worker_web_host}:{self.worker_web_port}"

    @property
    def bootstrap_list(self) -> list[str]:
        return self.kafka_bootstrap_servers.split(",")


def cross_setting_problems(s: Settings) -> list[str]:
    """What is inconsistent across settings (Kafka security) or names a missing file, each
    naming its variables."""
    protocol = env_name("kafka_security_protocol")
    problems = []
    sasl = s.kafka_security_protocol.startswith("SASL_")
    tls = s.kafka_security_protocol in ("SSL", "SASL_SSL")
    sasl_fields = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    if sasl:
        for name in sasl_fields:
            if getattr(s, name) in (None, ""):
                problems.append(
                    f"{env_name(name)} is required with {protocol}={s.kafka_security_protocol}"
                )
    else:
        for name in sasl_fields:
            if getattr(s, name) is not None:
                problems.append(
                    f"{env_name(name)} is set but {protocol} is {s.kafka_security_protocol}: "
                    "use SASL_SSL (or SASL_PLAINTEXT) for SASL"
                )
    files = (
        "kafka_ssl_ca_location",
        "kafka_ssl_certificate_location",
        "kafka_ssl_key_location",
    )
    for name in files:
        path = getattr(s, name)
        if path is None:
            continue
        if not tls:
            problems.append(
                f"{env_name(name)} is set but {protocol} is {s.kafka_security_protocol}: "
                "use SSL or SASL_SSL for TLS"
            )
        elif not path.is_file():
            problems.append(f"{env_name(name)}: no readable file at {path}")
    cert, key = s.kafka_ssl_certificate_location, s.kafka_ssl_key_location
    if (cert is None) != (key is None):
        problems.append(
            f"{env_name('kafka_ssl_certificate_location')} and "
            f"{env_name('kafka_ssl_key_location')} go together (mTLS needs both)"
        )
    if s.kafka_ssl_key_password is not None and key is None:
        problems.append(
            f"{env_name('kafka_ssl_key_password')} is set without "
            f"{env_name('kafka_ssl_key_location')}"
        )
    return problems


class SettingsError(ValueError):
    """Every settings problem at once, each naming its environment variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  {p}" for p in problems))


def env_name(field: str) -> str:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"METERLINE_{field.upper()}"


def reference_table() -> str:
    """Every setting as a Markdown table row: variable, default, meaning (for the README)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if name == "cache_dir":
            shown = "`~/.cache/meterline`"
        elif default is None or default == () or default == {}:
            shown = "(unset)"
        else:
            shown = f"`{default}`"
        rows.append(f"| `{env_name(name)}` | {shown} | {info.description or ''} |")
    return "\n".join(rows)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and overrides); raise SettingsError listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for problem in problems(exc, locate=_variable, plain=True):
            # The checks across settings (Kafka security) name their variables themselves.
            lines.extend(problem.reason.splitlines() if not problem.field else [str(problem)])
        raise SettingsError(lines) from None


def _variable(location: Sequence[int | str]) -> str:
    """The environment variable a settings error is about (the field name otherwise)."""
    if not location:
        return ""
    field = str(location[0])
    return env_name(field) if field in Settings.model_fields else field
