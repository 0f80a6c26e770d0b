from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from streams.clock import DAY_MS, HOUR_MS
from streams.schemas.catalog import Catalog, derived_field_errors
from streams.schemas.measurement import Measurement
from streams.schemas.numbers import NOT_FINITE
from streams.usage.validate import Horizon, Rejection, ValidMeasurement, rules_for

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW = "2026-01-01T00:00:00Z"


def api_meter(**changes: Any) -> dict[str, Any]:
    meter: dict[str, Any] = {
        "code": "api",
        "dataFields": [
            {"category": "WHO", "code": "user", "required": True},
            {"category": "WHAT", "code": "endpoint"},
            {"category": "MEASURE", "code": "calls"},
            {"category": "MEASURE", "code": "bytes"},
            {"category": "COST", "code": "cost"},
        ],
        "derivedFields": [
            {"category": "MEASURE", "code": "kb", "calculation": "bytes / 1000"},
            {"category": "COST", "code": "per_call", "calculation": "cost / calls"},
            {"category": "MEASURE", "code": "kb2", "calculation": "kb * 2"},
        ],
    }
    meter.update(changes)
    return meter


CATALOG = Catalog.from_documents({"meters": [api_meter()]})


def measurement(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "uid": "m-1",
        "meter": "api",
        "account": "cus_1",
        "ts": "2025-12-31T23:30:00.250Z",
        "who": {"user": "ada"},
        "measure": {"calls": 3, "bytes": 1500.5},
        "cost": {"cost": 0.3},
    }
    raw.update(changes)
    return {key: value for key, value in raw.items() if value is not ...}


def validate(raw: object, catalog: Catalog = CATALOG, **kwargs: Any) -> object:
    return rules_for(catalog).validate(raw, NOW_MS, **kwargs)


def rejection(raw: object, **kwargs: Any) -> Rejection:
    result = validate(raw, **kwargs)
    assert isinstance(result, Rejection), result
    return result


def test_a_valid_measurement_carries_exact_numbers_strings_and_derived_fields() -> None:
    result = validate(measurement(what={"endpoint": "/v1/x"}))
    assert result == ValidMeasurement(
        uid="m-1",
        meter="api",
        account="cus_1",
        ts=NOW_MS - 30 * 60_000 + 250,
        numbers={
            "calls": Decimal(3),
            "bytes": Decimal("1500.5"),
            "cost": Decimal("0.3"),
            "kb": Decimal("1.5005"),
            "per_call": Decimal("0.1"),
            "kb2": Decimal("3.0010"),
        },
        strings={"user": "ada", "endpoint": "/v1/x"},
    )


def test_ts_with_an_offset_is_converted_to_utc_epoch_ms() -> None:
    result = validate(measurement(ts="2026-01-01T00:30:00+01:00"))
    assert isinstance(result, ValidMeasurement)
    assert result.ts == NOW_MS - 30 * 60_000


def test_a_derived_field_whose_inputs_are_absent_is_absent() -> None:
    result = validate(measurement(measure={"calls": 3}))
    assert isinstance(result, ValidMeasurement)
    assert set(result.numbers) == {"calls", "cost", "per_call"}


def test_ets_after_ts_is_accepted() -> None:
    assert isinstance(validate(measurement(ets="2025-12-31T23:45:00Z")), ValidMeasurement)


def test_ts_exactly_at_the_horizon_is_accepted() -> None:
    oldest = measurement(ts="2025-11-27T00:00:00Z")  # 35 days before NOW
    assert isinstance(validate(oldest), ValidMeasurement)
    newest = measurement(ts="2026-01-01T01:00:00Z")
    assert isinstance(validate(newest), ValidMeasurement)


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ([], "measurement", "expected a JSON object"),
        (measurement(uid=...), "uid", "uid is required"),
        (measurement(uid=None), "uid", "uid is required"),
        (measurement(uid=7), "uid", "expected a string"),
        (measurement(uid=""), "uid", "must be 1 to 200 characters long"),
        (measurement(uid="x" * 201), "uid", "must be 1 to 200 characters long"),
        (measurement(meter=...), "meter", "meter is required"),
        (measurement(meter=None), "meter", "meter is required"),
        (measurement(meter="web"), "meter", "unknown meter 'web'"),
        (measurement(meter=["api"]), "meter", "unknown meter ['api']"),
        (measurement(account=...), "account", "account is required"),
        (measurement(account=""), "account", "must be 1 to 200 characters long"),
        (measurement(ts=...), "ts", "ts is required"),
        (measurement(ts=1767225600), "ts", "expected an ISO 8601 date-time string"),
        (measurement(ts="yesterday"), "ts", "'yesterday' is not an ISO 8601 date-time"),
        (
            measurement(ts="2025-12-31T23:30:00"),
            "ts",
            "must carry a timezone ('Z' or an offset such as '+01:00')",
        ),
        (
            measurement(ts="2025-11-26T23:59:59.999Z"),
            "ts",
            "ts is outside the accepted horizon (older than 35 days)",
        ),
        (
            measurement(ts="2026-01-01T01:00:00.001Z"),
            "ts",
            "ts is outside the accepted horizon (more than 1 hour in the future)",
        ),
        (measurement(ets="later"), "ets", "'later' is not an ISO 8601 date-time"),
        (measurement(ets="2025-12-31T23:29:59Z"), "ets", "ets must not be before ts"),
        (measurement(source="x"), "source", "unknown property"),
        (measurement(measure=[1]), "measure", "expected an object"),
        (measurement(who=None), "who", "expected an object"),
        (
            measurement(measure={"calls": 1, "foo": 2}),
            "measure.foo",
            "unknown field 'foo' for meter 'api' in measure",
        ),
        (
            measurement(cost={"calls": 1}),
            "cost.calls",
            "unknown field 'calls' for meter 'api' in cost",
        ),
        (
            measurement(measure={"kb": 1}),
            "measure.kb",
            "field 'kb' of meter 'api' is derived and cannot be sent",
        ),
        (measurement(measure={"calls": "5"}), "measure.calls", "expected a number"),
        (measurement(measure={"calls": True}), "measure.calls", "expected a number"),
        (measurement(measure={"calls": None}), "measure.calls", "expected a number"),
        (measurement(measure={"calls": float("nan")}), "measure.calls", NOT_FINITE),
        (measurement(measure={"calls": float("inf")}), "measure.calls", NOT_FINITE),
        (measurement(who={"user": 42}), "who.user", "expected a string"),
        (measurement(who={}), "who.user", "required WHO field 'user' missing"),
        (
            measurement(measure={"calls": 0}),
            "cost.per_call",
            "derived field 'per_call': division by zero at 6",
        ),
    ],
)
def test_each_rule_rejects_naming_the_field_and_the_reason(
    raw: object, field: str, reason: str
) -> None:
    assert rejection(raw) == Rejection(field, reason)


def test_a_custom_horizon_is_described_in_the_reason() -> None:
    horizon = Horizon(past_ms=2 * HOUR_MS, future_ms=90_000)
    old = rejection(measurement(ts="2025-12-31T21:59:59Z"), horizon=horizon)
    assert old.reason == "ts is outside the accepted horizon (older than 2 hours)"
    new = rejection(measurement(ts="2026-01-01T00:01:31Z"), horizon=horizon)
    assert new.reason == "ts is outside the accepted horizon (more than 90 seconds in the future)"


def test_a_required_number_field_must_be_present() -> None:
    fields = [{"category": "MEASURE", "code": "calls", "required": True}]
    catalog = Catalog.from_documents({"meters": [{"code": "api", "dataFields": fields}]})
    raw = measurement(who=..., measure={}, cost=...)
    assert validate(raw, catalog) == Rejection(
        "measure.calls", "required MEASURE field 'calls' missing"
    )


def test_a_meter_with_a_broken_calculation_rejects_its_measurements() -> None:
    derived = [{"category": "MEASURE", "code": "kb", "calculation": "bites / 1000"}]
    # `catalog apply` refuses such a meter; one written to the topic by hand is kept
    # (leniently) and its measurements are rejected with the reason.
    lenient = Catalog.from_entries_lenient([("meter:api", api_meter(derivedFields=derived))])
    assert lenient.problems == [
        "meters[api].derivedFields[0].calculation: unknown field 'bites' at 1"
    ]
    catalog = lenient.catalog
    reason = (
        "meter 'api' cannot be used: meters[api].derivedFields[0].calculation: "
        "unknown field 'bites' at 1"
    )
    assert validate(measurement(), catalog) == Rejection("meter", reason)
    assert derived_field_errors(catalog.meters["api"]) == [
        "meters[api].derivedFields[0].calculation: unknown field 'bites' at 1"
    ]


def test_a_derived_field_may_use_only_fields_defined_before_it() -> None:
    derived = [
        {"category": "MEASURE", "code": "a", "calculation": "b + 1"},
        {"category": "MEASURE", "code": "b", "calculation": "calls"},
    ]
    meter = Catalog.from_entries_lenient(
        [("meter:api", api_meter(derivedFields=derived))]
    ).catalog.meters["api"]
    assert derived_field_errors(meter) == [
        "meters[api].derivedFields[0].calculation: unknown field 'b' at 1"
    ]


def test_rules_are_compiled_once_per_catalog_object() -> None:
    assert rules_for(CATALOG) is rules_for(CATALOG)
    other = Catalog.from_documents({"meters": [api_meter()]})
    assert rules_for(other) is not rules_for(CATALOG)


def test_horizon_defaults_to_the_dedup_horizon_and_one_hour() -> None:
    assert Horizon() == Horizon(past_ms=35 * DAY_MS, future_ms=HOUR_MS)


# --- the pydantic model at the HTTP edge -----------------------------------------------


def test_the_model_accepts_what_the_fast_validator_accepts() -> None:
    raw = measurement(ets="2025-12-31T23:45:00+00:00", what={"endpoint": "/v1"})
    model = Measurement.model_validate_json(json.dumps(raw))
    assert model.measure == {"calls": Decimal(3), "bytes": Decimal("1500.5")}
    assert model.cost == {"cost": Decimal("0.3")}
    assert isinstance(validate(raw), ValidMeasurement)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (measurement(uid=""), "uid"),
        (measurement(account=...), "account"),
        (measurement(ts="2025-12-31T23:30:00"), "ts"),
        (measurement(ts=1767225600), "ts"),
        (measurement(ets="2025-12-31T23:29:59Z"), "ets"),
        (measurement(measure={"calls": True}), "measure.calls"),
        (measurement(measure={"calls": "5"}), "measure.calls"),
        (measurement(who={"user": 42}), "who.user"),
        (measurement(source="x"), "source"),
    ],
)
def test_the_model_rejects_structural_problems_like_the_fast_validator(
    raw: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Measurement.model_validate_json(json.dumps(raw))
    locations = {".".join(str(part) for part in error["loc"]) for error in caught.value.errors()}
    assert field in locations
    assert rejection(raw).field == field


def test_the_json_schema_describes_numbers_and_timestamps() -> None:
    schema = Measurement.model_json_schema()
    properties = schema["properties"]
    number = properties["measure"]["additionalProperties"]
    assert number["type"] == "number"
    assert (number["exclusiveMinimum"], number["exclusiveMaximum"]) == (-(10**30), 10**30)
    assert "at most 30 digits before the decimal point and 20 after it" in number["description"]
    assert properties["cost"]["additionalProperties"] == number
    assert properties["who"]["additionalProperties"] == {"type": "string"}
    assert properties["ts"]["format"] == "date-time"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"uid", "meter", "account", "ts"}
