"""Fault injection: 429s, 500s, added latency, and timeouts after the write was applied."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

TimeoutMode = Literal["sleep", "drop"]


@dataclass(frozen=True)
class FaultConfig:
    """Probabilities are per request, in [0, 1]; `paths` are prefixes (empty: every /v1 path).

    `rate_timeout_after_apply` hits only fresh executions of mutating requests: the write
    is applied and its idempotent response stored, then the server either holds the
    response for `timeout_hold_ms` ("sleep", the client times out) or closes the connection
    mid-response ("drop"). A retry with the same key then gets the stored response.
    """

    rate_429: float = 0.0
    rate_500: float = 0.0
    latency_ms: int = 0
    rate_timeout_after_apply: float = 0.0
    timeout_mode: TimeoutMode = "sleep"
    timeout_hold_ms: int = 5_000
    paths: tuple[str, ...] = ()
    seed: int | None = None

    def merged(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with `changes` applied; ValueError names a bad field."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        values = dataclasses.asdict(self) | dict(changes)
        values["paths"] = tuple(values["paths"] or ())
        result = FaultConfig(**values)
        result.validate()
        return result

    def validate(self) -> None:
        for name in ("rate_429", "rate_500", "rate_timeout_after_apply"):
            rate = getattr(self, name)
            if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a number between 0 and 1, got {rate!r}")
        for name in ("latency_ms", "timeout_hold_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not all(isinstance(prefix, str) for prefix in self.paths):
            raise ValueError("paths must be a list of path prefixes")
        if self.timeout_mode not in ("sleep", "drop"):
            raise ValueError(f"timeout_mode must be 'sleep' or 'drop', got {self.timeout_mode!r}")

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"paths": list(self.paths)}


class FaultInjector:
    """The faults in force, the seeded random source that decides them, and how many of
    each kind were injected (`injected`: "429", "500", "timeout_after_apply")."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        self.injected: Counter[str] = Counter()

    def configure(self, changes: Mapping[str, Any]) -> FaultConfig:
        self.config = self.config.merged(changes)
        if "seed" in changes:
            self._random = random.Random(self.config.seed)
        return self.config

    def targets(self, path: str) -> bool:
        prefixes = self.config.paths
        return not prefixes or any(path.startswith(prefix) for prefix in prefixes)

    def roll(self, rate: float, kind: str) -> bool:
        """Whether this request gets the fault `kind` (counted when it does)."""
        hit = rate > 0.0 and self._random.random() < rate
        if hit:
            self.injected[kind] += 1
        return hit
