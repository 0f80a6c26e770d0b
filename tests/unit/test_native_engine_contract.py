"""The usage engine's behaviour tests (`test_usage_engine.py`, and the recovery property of
`test_usage_engine_recovery.py`) run again, each against the native engine: the engine
factories of those modules build a `NativeEngine` instead of the reference."""

from __future__ import annotations

from typing import Any

import pytest

from streams.schemas.catalog import Catalog
from tests.unit import test_usage_engine as behaviour
from tests.unit import test_usage_engine_recovery as recovery
from tests.unit.usage_engine_factories import CATALOG, PARTITIONS

native = pytest.importorskip("streams.usage.engine.native", reason="the native engine is not built")

# These look inside the reference (its private state, its modules) or patch it; the
# native engine's own tests cover the same ground (panics, the size bound is not needed).
REFERENCE_ONLY = {
    "test_an_unexpected_error_costs_one_measurement_not_the_batch",
    "test_processing_leaves_the_garbage_collector_as_it_found_it",
    "test_a_query_touches_only_the_windows_in_its_range",
    "test_expire_drops_uids_past_the_dedup_horizon_measured_from_the_newest_ts",
    "test_a_segments_size_bound_never_falls_below_its_exact_size",
}
BEHAVIOURS = sorted(
    name for name in dir(behaviour) if name.startswith("test_") and name not in REFERENCE_ONLY
)


def native_engine(partitions: int, catalog: Catalog | None = None, **kwargs: Any) -> Any:
    kwargs.pop("pause_gc", None)  # the native engine keeps nothing for the collector to scan
    return native.NativeEngine(partitions, catalog, **kwargs, threads=2)


@pytest.mark.parametrize("name", BEHAVIOURS)
def test_the_engine_behaviour_holds_for_the_native_engine(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(behaviour, "ReferenceEngine", native_engine)
    monkeypatch.setattr(behaviour, "engine", lambda **kw: native_engine(PARTITIONS, CATALOG, **kw))
    getattr(behaviour, name)()


def test_a_recovered_native_engine_and_a_standby_answer_and_continue_like_the_original(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recovery, "ReferenceEngine", native_engine)
    recovery.test_a_recovered_engine_and_a_standby_answer_and_continue_like_the_original()
