"""The environment of a child process (`connectors.environment`): settings given by field
name are the variables the child's `Settings` reads back as the same values."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.environment import process_env, setting_variables
from streams.settings import Settings


def test_a_child_reads_back_every_setting_it_was_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = process_env(
        {},
        kafka_bootstrap_servers="127.0.0.1:19092",
        topic_prefix="t1.",
        partitions=3,
        data_dir=tmp_path,
        api_keys=("key-1", "key-2"),
        stripe_webhook_secrets="whsec_a",
        stripe_finalize_on_approval=True,
        worker_stall_timeout_s=30,
    )
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert (child.topic_prefix, child.partitions, child.data_dir) == ("t1.", 3, tmp_path)
    assert [key.get_secret_value() for key in child.api_keys] == ["key-1", "key-2"]
    assert [s.get_secret_value() for s in child.stripe_webhook_secrets] == ["whsec_a"]
    assert child.stripe_finalize_on_approval is True
    assert child.worker_stall_timeout_s == 30


def test_settings_are_written_over_the_given_environment() -> None:
    env = process_env({"PATH": "/bin", "METERLINE_HTTP_PORT": "1"}, http_port=8081)
    assert env == {"PATH": "/bin", "METERLINE_HTTP_PORT": "8081"}


def test_a_name_that_is_not_a_setting_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="http_prot: not a setting"):
        setting_variables(http_prot=8081)
