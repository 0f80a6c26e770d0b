"""Structural checks of measurements at the edge, shared by the ingest API and file
uploads. Pure: no HTTP here.

Every measurement is checked against the `Measurement` model; a problem is
`{"field": "measure.calls", "reason": ...}` in m3ter's words ("is required", "unknown
property"). Checks that need the catalog happen later, in the usage agent.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from streams.schemas.catalog import CODE_PATTERN
from streams.schemas.errors import problems
from streams.schemas.measurement import (
    MAX_ID_LENGTH,
    NUMBER_MAPS,
    STRING_MAPS,
    Measurement,
    parse_timestamp,
)
from streams.schemas.numbers import LIMIT as NUMBER_LIMIT
from streams.schemas.numbers import DecodeError, exact_number

# What the pre-check knows how to judge, intersected with the model's own fields: a field
# the model adds (or drops) later sends every measurement carrying it to the model.
_JUDGED = frozenset({"uid", "meter", "account", "ts", "ets", *STRING_MAPS, *NUMBER_MAPS})
_PROPERTIES = _JUDGED & Measurement.model_fields.keys()
_REQUIRED = frozenset(name for name, f in Measurement.model_fields.items() if f.is_required())
_NUMBER_MAPS = frozenset(NUMBER_MAPS)
_STRING_MAPS = frozenset(STRING_MAPS)
_CODE = re.compile(CODE_PATTERN)
_WORDS = {"missing": "is required", "extra_forbidden": "unknown property"}


def json_problem(text: bytes, error: DecodeError, line: bool = True) -> str:
    """What is wrong with `text` and where: orjson words it with line and column."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if line else f"column {exc.colno}"
        return f"{exc.msg} at {at} (position {exc.pos})"
    return str(error)  # JSON to orjson, not to the exact decoder (e.g. a 5,000-digit integer)


def plainly_valid(measurement: object) -> bool:
    """True only for a measurement the `Measurement` model certainly accepts.

    The model costs ~8 us a measurement, most of the edge's CPU; this pre-check of the
    common shape costs ~2 us. It accepts a strict subset of what the model accepts
    (same shared rules: identifier lengths, code pattern, `parse_timestamp`,
    `exact_number`), so the model still judges, and words the errors of, everything else.
    """
    if type(measurement) is not dict:
        return False
    keys = measurement.keys()
    if not (keys >= _REQUIRED and keys <= _PROPERTIES):
        return False
    uid, account, meter = measurement["uid"], measurement["account"], measurement["meter"]
    if type(uid) is not str or not 0 < len(uid) <= MAX_ID_LENGTH:
        return False
    if type(account) is not str or not 0 < len(account) <= MAX_ID_LENGTH:
        return False
    if type(meter) is not str or _CODE.match(meter) is None:
        return False
    ts = parse_timestamp(measurement["ts"])
    if isinstance(ts, str):
        return False
    for name, values in measurement.items():
        if name in _NUMBER_MAPS:
            if type(values) is not dict or "" in values:
                return False
            for value in values.values():
                if type(value) is int:
                    if not -NUMBER_LIMIT < value < NUMBER_LIMIT:
                        return False
                elif isinstance(exact_number(value), str):
                    return False
        elif name in _STRING_MAPS:
            if type(values) is not dict or "" in values:
                return False
            for value in values.values():
                if type(value) is not str:
                    return False
        elif name == "ets" and values is not None:
            ets = parse_timestamp(values)
            if isinstance(ets, str) or ets < ts:
                return False
    return True


def measurement_errors(measurement: object) -> list[dict[str, str]]:
    """Every structural problem of one measurement (empty when it is valid)."""
    if plainly_valid(measurement):
        return []
    try:
        Measurement.model_validate(measurement)
    except ValidationError as exc:
        found = problems(exc, whole="measurement", plain=True, words=_WORDS)
        return [problem.as_dict() for problem in found]
    return []


def batch_errors(measurements: list[Any]) -> list[dict[str, Any]]:
    """Every structural problem of every measurement, each with its index."""
    if all(map(plainly_valid, measurements)):
        return []
    return [
        {"index": index, **problem}
        for index, measurement in enumerate(measurements)
        for problem in measurement_errors(measurement)
    ]
