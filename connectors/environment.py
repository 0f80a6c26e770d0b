"""The environment of a meterline child process: settings given by their field names
(`streams.settings.Settings`), written as the variables those fields are read from
(`METERLINE_HTTP_PORT`, `KAFKA_BOOTSTRAP_SERVERS`, `STRIPE_WEBHOOK_SECRET`, ...).

The dev stack, the demo, the integration tests' stack and the benchmarks start their
processes with it: nobody spells a variable name by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

from streams.settings import Settings, env_name

Value = str | int | float | bool | Path | Enum | tuple[str, ...] | list[str]


def setting_variables(**settings: Value) -> dict[str, str]:
    """`{variable: text}` for each setting (`http_port=8081` → `METERLINE_HTTP_PORT`:
    `"8081"`); booleans are `true`/`false`, lists comma-separated. ValueError names a
    name that is not a setting."""
    unknown = sorted(set(settings) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a setting of streams.settings.Settings")
    return {env_name(name): _text(value) for name, value in settings.items()}


def process_env(base: Mapping[str, str] | None = None, /, **settings: Value) -> dict[str, str]:
    """`base` (this process's environment by default) with `settings` set over it."""
    env = dict(os.environ if base is None else base)
    env.update(setting_variables(**settings))
    return env


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple | list):
        return ",".join(value)
    return str(value)
