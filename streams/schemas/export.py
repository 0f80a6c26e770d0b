"""The published contracts as JSON Schema files, for producers and downstream consumers.

`meterline schemas export` writes them next to this module; a test keeps them in sync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streams.schemas.accounts import Account, AccountPlan
from streams.schemas.alerts import Alert
from streams.schemas.balances import Balance, BalanceGrant
from streams.schemas.bill import Bill
from streams.schemas.catalog import (
    Aggregation,
    AlertRule,
    Commitment,
    CompoundAggregation,
    Counter,
    Meter,
    Plan,
    PlanMapping,
)
from streams.schemas.commands import COMMANDS
from streams.schemas.counters import CounterAdjustment
from streams.schemas.measurement import Measurement

HERE = Path(__file__).resolve().parent

MODELS: dict[str, type[BaseModel]] = {
    "bill": Bill,
    "measurement": Measurement,
    "account": Account,
    "account-plan": AccountPlan,
    "meter": Meter,
    "aggregation": Aggregation,
    "compound-aggregation": CompoundAggregation,
    "counter": Counter,
    "plan": Plan,
    "plan-mapping": PlanMapping,
    "counter-adjustment": CounterAdjustment,
    "alert-rule": AlertRule,
    "alert": Alert,
    "commitment": Commitment,
    "balance-grant": BalanceGrant,
    "balance": Balance,
}


def schemas() -> dict[str, dict[str, Any]]:
    out = {name: model.model_json_schema(mode="serialization") for name, model in MODELS.items()}
    out["bill-command"] = COMMANDS.json_schema(mode="serialization")
    out["measurement-envelope"] = {
        "title": "MeasurementEnvelope",
        "description": "A `measurements` message carrying many measurements of one partition",
        "type": "object",
        "properties": {"measurements": {"type": "array", "items": {"$ref": "measurement.json"}}},
        "required": ["measurements"],
        "additionalProperties": False,
    }
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(directory: Path = HERE) -> list[Path]:
    written = []
    for name, schema in schemas().items():
        path = directory / f"{name}.json"
        path.write_text(render(schema))
        written.append(path)
    return written
