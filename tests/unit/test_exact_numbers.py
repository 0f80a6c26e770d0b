"""Numbers are never silently changed: the rule, the worker's decode and fold, the producer.

The edge paths (ingest API, file uploads) are specified in test_ingest_api.py with the
same values; the whole trip over a real broker in tests/integration/test_ingest_to_query.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from connectors.kafka.measurements import MeasurementProducer, encode_measurement
from streams.schemas.catalog import AggregationFunction, Catalog
from streams.schemas.measurement import Measurement
from streams.schemas.numbers import (
    NOT_FINITE,
    TOO_LARGE,
    TOO_PRECISE,
    decode_json,
    encode_json,
    exact_number,
)
from streams.sources import Source
from streams.usage.metering import Message, Metering, measurements_of
from streams.usage.state import UsageState, fold, merge, value
from streams.usage.store import UsageRecord
from streams.usage.validate import ValidMeasurement

# What a producer writes -> what it must count as, exactly.
KEPT = {
    "12345678901234567890123": Decimal("12345678901234567890123"),
    "18446744073709551616": Decimal(2**64),
    "19933688932870350000": Decimal("19933688932870350000"),  # misread by msgspec < 0.19
    "12345678901234567890.12345678901234567890": Decimal(
        "12345678901234567890.12345678901234567890"
    ),
    "-0": Decimal(0),
    "1E+2": Decimal(100),
    "0.1": Decimal("0.1"),
    "999999999999999999999999999999.99999999999999999999": Decimal(
        "999999999999999999999999999999.99999999999999999999"
    ),
}
# What cannot be kept exactly within the limits -> the reason it is refused for.
REFUSED = {
    "1e-400": TOO_PRECISE,
    "0.000000000000000000001": TOO_PRECISE,
    "1234567890123456789012345678901234567890": TOO_LARGE,
    "1e30": TOO_LARGE,
    "1e-99999999999999999999999": TOO_PRECISE,  # beyond what a Decimal can hold
    "-1e99999999999999999999999": TOO_LARGE,
}
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
CATALOG = Catalog.from_documents(
    {
        "meters": [{"code": "api", "dataFields": [{"category": "MEASURE", "code": "bytes"}]}],
        "aggregations": [
            {"code": "total", "meter": "api", "targetField": "bytes", "aggregation": "SUM"},
            {"code": "peak", "meter": "api", "targetField": "bytes", "aggregation": "MAX"},
        ],
    }
)


def as_sent(uid: str, number: str, account: str = "acme") -> bytes:
    """A measurement as a producer writes it: the number is JSON text, not a Python value."""
    return (
        f'{{"uid":"{uid}","meter":"api","account":"{account}","ts":"{NOW.isoformat()}",'
        f'"measure":{{"bytes":{number}}}}}'
    ).encode()


def envelope(*measurements: bytes) -> bytes:
    return b'{"measurements":[' + b",".join(measurements) + b"]}"


# --- the rule --------------------------------------------------------------------------


@pytest.mark.parametrize("text", KEPT)
def test_a_number_is_decoded_exactly_and_written_back_as_the_same_number(text: str) -> None:
    decoded = decode_json(text)
    assert exact_number(decoded) == KEPT[text]
    assert decode_json(encode_json(decoded)) == decoded
    assert exact_number(decode_json(encode_json(decoded))) == KEPT[text]


@pytest.mark.parametrize("text", REFUSED)
def test_a_number_that_cannot_be_kept_exactly_is_refused_with_the_reason(text: str) -> None:
    assert exact_number(decode_json(text)) == REFUSED[text]


def test_the_limits_are_30_digits_before_the_point_and_20_after_trailing_zeros_aside() -> None:
    assert exact_number(Decimal("1" + "0" * 29)) == Decimal(10**29)
    assert exact_number(10**30) == TOO_LARGE
    assert exact_number(-(10**30)) == TOO_LARGE
    assert exact_number(Decimal("1E-20")) == Decimal("1E-20")
    assert exact_number(Decimal("1." + "0" * 40)) == 1
    assert exact_number(Decimal("0E-400")) == 0
    assert TOO_LARGE.startswith("has more than 30 digits before the decimal point")
    assert TOO_PRECISE.startswith("has more than 20 digits after the decimal point")


@pytest.mark.parametrize("number", [float("nan"), float("inf"), Decimal("NaN"), Decimal("-Inf")])
def test_nan_and_infinities_are_refused(number: Any) -> None:
    assert exact_number(number) == NOT_FINITE


def test_nan_and_infinity_are_not_json() -> None:
    for text in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError):
            decode_json(f'{{"bytes": {text}}}')


def test_the_model_refuses_what_it_cannot_keep_exactly_naming_the_field() -> None:
    raw = decode_json(as_sent("u", "1e-400"))
    with pytest.raises(ValueError, match=r"measure\.bytes\n.*more than 20 digits after"):
        Measurement.model_validate(raw)
    kept = Measurement.model_validate(decode_json(as_sent("u", "18446744073709551616")))
    assert kept.measure["bytes"] == 2**64


# --- producers writing straight to the measurements topic: the worker ------------------


def test_the_worker_decodes_every_number_of_a_message_exactly() -> None:
    carried = measurements_of(envelope(*(as_sent(f"u{i}", t) for i, t in enumerate(KEPT))))
    assert not isinstance(carried, str)
    sent = [measurement["measure"]["bytes"] for measurement in carried.measurements]
    assert [exact_number(number) for number in sent] == list(KEPT.values())


def test_the_worker_folds_the_exact_values_sent_and_refuses_the_rest_naming_the_field() -> None:
    kept = [as_sent(f"k{i}", text, account=f"acct-{i}") for i, text in enumerate(KEPT)]
    refused = [as_sent(f"r{i}", text) for i, text in enumerate(REFUSED)]
    store: dict[str, bytes] = {}
    outcome = Metering().process(
        [Message(b"acme", envelope(*kept, *refused), Source("measurements", 0, 7))],
        CATALOG,
        NOW_MS,
        store.get,
    )
    assert outcome.accepted == len(KEPT)
    assert [(r.field, r.reason) for r in outcome.rejected] == [
        ("measure.bytes", reason) for reason in REFUSED.values()
    ]
    windows = [
        states
        for raw in outcome.writes.values()
        for states in UsageRecord.from_bytes(raw).hours.values()
    ]
    totals = [value(states["total"], AggregationFunction.SUM) for states in windows]
    peaks = [value(states["peak"], AggregationFunction.MAX) for states in windows]
    assert sorted(totals) == sorted(peaks) == sorted(KEPT.values())  # type: ignore[type-var]


def test_a_dead_letter_keeps_the_refused_number_exactly() -> None:
    text = "1234567890123456789012345678901234567890"
    store: dict[str, bytes] = {}
    outcome = Metering().process(
        [Message(b"acme", as_sent("u", text), Source("measurements", 0, 1))],
        CATALOG,
        NOW_MS,
        store.get,
    )
    (rejected,) = outcome.rejected
    assert f'"measure":{{"bytes":{text}}}'.encode() in rejected.to_bytes()
    assert rejected.source.offset == 1


# --- the fold --------------------------------------------------------------------------


def test_sums_are_exact_past_28_significant_digits() -> None:
    values = list(KEPT.values())
    measurements = [
        ValidMeasurement(f"u{i}", "api", "acme", NOW_MS, {"bytes": number}, {})
        for i, number in enumerate(values)
    ]
    (total,) = [
        state for (_, code, _), state in fold(CATALOG, measurements).items() if code == "total"
    ]
    exact = sum(map(Fraction, values))
    assert total.sum is not None and Fraction(total.sum) == exact
    tiny = merge(total, UsageState(1, Decimal("1E-20"), Decimal("1E-20"), Decimal("1E-20")))
    assert tiny.sum is not None and Fraction(tiny.sum) == exact + Fraction(1, 10**20)


# --- Python producers ------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(self, topic: str, value: bytes, **_: Any) -> None:
        self.values.append(value)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_a_python_producer_writes_ints_and_decimals_as_the_exact_numbers() -> None:
    measurement = {
        "uid": "u",
        "meter": "api",
        "account": "acme",
        "ts": NOW.isoformat(),
        "measure": {"bytes": 2**64, "calls": Decimal("12345678901234567890.12345678901234567890")},
    }
    recorder = _Recorder()
    with MeasurementProducer("unused:9092", "measurements", 3, producer=recorder) as producer:  # type: ignore[arg-type]
        producer.send(measurement)
    (sent,) = recorder.values
    assert b'"bytes":18446744073709551616' in sent
    assert b'"calls":12345678901234567890.12345678901234567890' in sent
    assert decode_json(encode_measurement(measurement)[1]) == measurement


def test_json_nested_deeper_than_the_decoder_goes_is_a_decode_error_not_a_crash() -> None:
    from streams.schemas.numbers import DecodeError, decode_json
    from streams.usage.metering import measurements_of

    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode_json(deep)
    assert measurements_of(b'{"measurements": ' + deep + b"}") == "not JSON: JSON nested too deeply"
