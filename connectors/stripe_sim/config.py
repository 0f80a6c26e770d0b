"""The simulator's start-up configuration (faults can also change at run time)."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.stripe_sim.faults import FaultConfig

BASIL = "2025-03-31.basil"
ACACIA = "2025-02-24.acacia"


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 12111
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_api_version: str = BASIL
    """Shape of the objects inside webhook events."""
    default_api_version: str = BASIL
    """Shape of API responses to requests that send no `Stripe-Version` header."""
    faults: FaultConfig = field(default_factory=FaultConfig)
    idempotency_ttl_seconds: int = 24 * 3600
    webhook_max_attempts: int = 5
    webhook_backoff_seconds: float = 0.5

    def __post_init__(self) -> None:
        if self.webhook_url and not (self.webhook_secret or "").startswith("whsec_"):
            raise ValueError("a webhook URL needs a signing secret starting with 'whsec_'")
        self.faults.validate()
