"""How many standby copies of each table partition a worker keeps is a setting."""

from __future__ import annotations

import pytest

from streams.app import create_app, resident_bytes, table_sizes
from streams.settings import SettingsError, load_settings


def test_standby_replicas_are_passed_to_faust_and_default_to_one() -> None:
    assert create_app(load_settings()).conf.table_standby_replicas == 1
    app = create_app(load_settings(standby_replicas=0))
    assert app.conf.table_standby_replicas == 0


def test_a_negative_standby_count_is_refused_naming_the_setting() -> None:
    with pytest.raises(
        SettingsError,
        match="METERLINE_STANDBY_REPLICAS: Input should be greater than or equal to 0",
    ):
        load_settings(standby_replicas=-1)


def test_the_health_page_counts_the_keys_every_table_holds() -> None:
    sizes = table_sizes(create_app(load_settings()))
    assert sizes and all(count == 0 for count in sizes.values())


def test_the_health_page_gives_the_resident_memory_that_standbys_and_the_engine_take() -> None:
    before = resident_bytes()
    assert before is not None and before > 10 * 1024 * 1024  # a Python process with faust
    held = bytearray(64 * 1024 * 1024)
    held[::4096] = b"x" * len(held[::4096])  # touch every page
    after = resident_bytes()
    assert after is not None and after - before >= 60 * 1024 * 1024
    del held
