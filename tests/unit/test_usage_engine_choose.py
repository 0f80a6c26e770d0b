"""Which usage engine a worker runs: METERLINE_ENGINE=auto|native|python."""

from __future__ import annotations

import sys

import pytest

from streams.settings import SettingsError, load_settings
from streams.usage.engine import Limits, ReferenceEngine
from streams.usage.engine.choose import EngineUnavailable, make_engine
from streams.usage.validate import DEFAULT_HORIZON
from tests.unit.usage_engine_factories import CATALOG, NOW, PARTITIONS, m, message


def make(kind: str) -> tuple[object, str]:
    return make_engine(kind, PARTITIONS, CATALOG, DEFAULT_HORIZON, 400, Limits())


@pytest.fixture
def without_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extension module cannot be imported (a machine without a Rust toolchain)."""
    monkeypatch.setitem(sys.modules, "meterline_native", None)  # import raises ImportError
    monkeypatch.delitem(sys.modules, "streams.usage.engine.native", raising=False)


def test_python_is_the_reference_engine() -> None:
    engine, name = make("python")
    assert name == "python" and isinstance(engine, ReferenceEngine)


def test_auto_uses_the_native_engine_when_it_is_installed() -> None:
    native = pytest.importorskip("streams.usage.engine.native")
    engine, name = make("auto")
    assert name == "native" and isinstance(engine, native.NativeEngine)
    assert engine.process([message(0, m("a"))], NOW).stats.accepted == 1


@pytest.mark.usefixtures("without_native")
def test_auto_falls_back_to_the_python_engine_without_the_native_one() -> None:
    engine, name = make("auto")
    assert name == "python" and isinstance(engine, ReferenceEngine)


@pytest.mark.usefixtures("without_native")
def test_native_without_the_native_engine_is_an_error_naming_the_setting() -> None:
    with pytest.raises(EngineUnavailable, match=r"METERLINE_ENGINE=native.*make install"):
        make("native")


def test_an_unknown_engine_kind_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="METERLINE_ENGINE must be one of auto, native, python"):
        make("rust")


def test_the_engine_setting_is_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().engine == "auto"
    monkeypatch.setenv("METERLINE_ENGINE", "python")
    assert load_settings().engine == "python"
    monkeypatch.setenv("METERLINE_ENGINE", "fast")
    with pytest.raises(SettingsError, match="METERLINE_ENGINE: Input should be"):
        load_settings()
