"""Metering a batch of messages: every measurement judged on its own, nothing dropped silently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import streams.usage.metering as metering_module
from streams.schemas.catalog import Catalog
from streams.sources import Source
from streams.usage import state
from streams.usage.metering import BatchOutcome, Message, Metering, measurements_of
from streams.usage.store import UsageRecord

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
CATALOG = Catalog.from_documents(
    {
        "meters": [{"code": "api", "dataFields": [{"category": "MEASURE", "code": "calls"}]}],
        "aggregations": [
            {"code": "calls", "meter": "api", "targetField": "calls", "aggregation": "SUM"}
        ],
    }
)


def m(uid: str, calls: Any = 1, account: str = "acme", **extra: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "meter": "api",
        "account": account,
        "ts": NOW.isoformat(),
        "measure": {"calls": calls},
        **extra,
    }


def msg(offset: int, value: Any) -> Message:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return Message(b"acme", raw, Source("measurements", 2, offset))


def total(store: dict[str, bytes]) -> int:
    out = 0
    for raw in store.values():
        for states in UsageRecord.from_bytes(raw).hours.values():
            out += int(states["calls"].sum or 0)
    return out


def run(
    metering: Metering, store: dict[str, bytes], *messages: Message, **kwargs: Any
) -> BatchOutcome:
    outcome = metering.process(messages, CATALOG, NOW_MS, store.get, **kwargs)
    store.update(outcome.writes)
    return outcome


def test_a_message_is_one_measurement_or_an_envelope() -> None:
    assert measurements_of(orjson.dumps(m("a"))) == ([m("a")], False)
    assert measurements_of(orjson.dumps({"measurements": [m("a"), m("b")]})) == (
        [m("a"), m("b")],
        True,
    )
    assert (
        measurements_of(b"[1,2]")
        == 'expected a measurement object or a {"measurements": [...]} envelope'
    )
    assert str(measurements_of(b"{")).startswith("not JSON")
    assert measurements_of(b"") == "empty message"


def test_duplicates_in_a_batch_and_across_batches_count_once() -> None:
    metering = Metering()
    store: dict[str, bytes] = {}
    first = run(metering, store, msg(0, {"measurements": [m("a", 2), m("b", 3), m("a", 2)]}))
    assert (first.accepted, first.duplicates) == (2, 1)
    second = run(metering, store, msg(1, m("b", 3)), msg(2, m("c", 4)))
    assert (second.accepted, second.duplicates) == (1, 1)
    assert total(store) == 9
    # a fresh process (empty cache) reads the uids back from the stored records
    third = run(Metering(), store, msg(3, m("a", 2)))
    assert (third.accepted, third.duplicates) == (0, 1)


def test_rejections_carry_field_reason_index_and_source_and_the_rest_is_folded() -> None:
    metering = Metering()
    store: dict[str, bytes] = {}
    outcome = run(
        metering,
        store,
        msg(7, {"measurements": [m("ok"), m("bad", calls="x"), {**m("ghost"), "meter": "nope"}]}),
        msg(8, b"not json"),
    )
    assert outcome.accepted == 1 and total(store) == 1
    rejected = {(r.field, r.index, str(r.source)) for r in outcome.rejected}
    assert ("measure.calls", 1, "measurements[2]@7") in rejected
    assert ("meter", 2, "measurements[2]@7") in rejected
    assert ("value", None, "measurements[2]@8") in rejected
    record = orjson.loads(outcome.rejected[0].to_bytes())
    assert record["sourceOffset"] == 7 and record["measurement"]["uid"] == "bad"


def test_a_locked_period_rejects_the_measurement_with_the_reason() -> None:
    outcome = run(Metering(), {}, msg(0, m("late")), locked=lambda account, ts: "period is locked")
    assert outcome.accepted == 0
    assert [(r.field, r.reason) for r in outcome.rejected] == [("ts", "period is locked")]


def test_an_unexpected_error_costs_one_measurement_not_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_fold = state.fold

    def fragile(catalog: Catalog, measurements: Any, windows: Any = None) -> Any:
        batch = list(measurements)
        if any(item.uid == "poison" for item in batch):
            raise RuntimeError("boom")
        return real_fold(catalog, batch, windows)

    monkeypatch.setattr("streams.usage.metering.fold", fragile)
    metering = Metering()
    store: dict[str, bytes] = {}
    outcome = run(metering, store, msg(0, {"measurements": [m("a", 5), m("poison"), m("b", 6)]}))
    assert outcome.accepted == 2 and total(store) == 11
    assert [(r.field, r.index) for r in outcome.rejected] == [("measurement", 1)]
    assert "internal error" in outcome.rejected[0].reason
    # the poisoned uid was not remembered: a fixed redelivery is folded
    monkeypatch.setattr("streams.usage.metering.fold", real_fold)
    assert run(metering, store, msg(1, m("poison", 1))).accepted == 1


def test_a_full_account_hour_dead_letters_instead_of_growing_past_a_kafka_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metering_module, "MAX_UIDS_PER_RECORD", 2)
    outcome = run(Metering(), {}, msg(0, {"measurements": [m("a"), m("b"), m("c"), m("a")]}))
    assert (outcome.accepted, outcome.duplicates) == (2, 1)
    assert [r.index for r in outcome.rejected] == [2]
    assert "de-duplication memory is full" in outcome.rejected[0].reason


def test_records_are_per_account_hour_and_remember_compact_uid_hashes() -> None:
    store: dict[str, bytes] = {}
    run(Metering(), store, msg(0, {"measurements": [m("a"), m("b", account="globex")]}))
    assert sorted(store) == [f"acme|{NOW_MS // 3_600_000}", f"globex|{NOW_MS // 3_600_000}"]
    record = UsageRecord.from_bytes(store[f"acme|{NOW_MS // 3_600_000}"])
    assert len(record.uids) == 1 and all(len(uid) == 11 for uid in record.uids)


UNIQUE_CATALOG = Catalog.from_documents(
    {
        "meters": [
            {
                "code": "api",
                "dataFields": [
                    {"category": "MEASURE", "code": "calls"},
                    {"category": "WHO", "code": "user"},
                ],
            }
        ],
        "aggregations": [
            {"code": "calls", "meter": "api", "targetField": "calls", "aggregation": "SUM"},
            {"code": "users", "meter": "api", "targetField": "user", "aggregation": "UNIQUE"},
        ],
    }
)


def test_long_unique_values_are_counted_apart_in_bounded_state() -> None:
    # 24 distinct 420 kB values once grew one account-hour record to ~10 MB.
    values = [chr(65 + i) * 420_000 for i in range(24)] + ["A" * 420_000, "short"]
    batch = {"measurements": [m(f"u{i}", who={"user": v}) for i, v in enumerate(values)]}
    nothing_stored: dict[str, bytes] = {}
    outcome = Metering().process([msg(0, batch)], UNIQUE_CATALOG, NOW_MS, nothing_stored.get)
    assert outcome.accepted == 26 and not outcome.rejected
    (stored,) = outcome.writes.values()
    assert len(stored) < 10_000
    (states,) = UsageRecord.from_bytes(stored).hours.values()
    assert len(states["users"].unique) == 25


def test_a_record_that_would_outgrow_a_kafka_message_dead_letters_its_measurements_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metering_module, "MAX_RECORD_BYTES", 400)
    metering = Metering()
    store: dict[str, bytes] = {}
    run(metering, store, msg(0, m("first", 1)))
    before = dict(store)
    big = [m(f"u{i}", 1) for i in range(40)]
    outcome = run(
        metering, store, msg(1, {"measurements": [*big, m("other", 7, account="globex")]})
    )
    assert outcome.accepted == 1
    assert [r.index for r in outcome.rejected] == list(range(40))
    assert all("would grow to" in r.reason and "acme" in r.reason for r in outcome.rejected)
    acme = f"acme|{NOW_MS // 3_600_000}"
    assert store[acme] == before[acme]  # the stored record is unchanged
    assert total(store) == 1 + 7
    # the refused uids were not remembered, and the cached record was not kept changed
    assert run(metering, store, msg(2, m("u0", 5))).accepted == 1
    assert total(store) == 1 + 5 + 7
