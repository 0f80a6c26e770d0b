from __future__ import annotations

import pytest
from typer.testing import CliRunner

from connectors.cli import app
from streams.settings import SettingsError, load_settings


def test_comma_separated_secrets_and_keys_become_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_API_KEYS", "key-one, key-two,")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_old,whsec_new")
    settings = load_settings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-one", "key-two"]
    assert [s.get_secret_value() for s in settings.stripe_webhook_secrets] == [
        "whsec_old",
        "whsec_new",
    ]
    assert "whsec_old" not in repr(settings)


def test_conventional_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_123")
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:12111")
    monkeypatch.setenv("METERLINE_ORG_ID", "acme")
    settings = load_settings()
    assert settings.bootstrap_list == ["k1:9092", "k2:9093"]
    assert settings.stripe_api_key is not None
    assert settings.stripe_api_key.get_secret_value() == "sk_test_123"
    assert settings.stripe_api_base == "http://127.0.0.1:12111"
    assert settings.org_id == "acme"
    assert settings.http_port == 8080


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.http_port = 1


def test_every_invalid_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_HTTP_PORT", "70000")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "no-port-here")
    monkeypatch.setenv("STRIPE_API_BASE", "ftp://example")
    monkeypatch.setenv("METERLINE_PARTITIONS", "zero")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    names = [problem.split(":")[0] for problem in caught.value.problems]
    assert sorted(names) == sorted(
        [
            "METERLINE_HTTP_PORT",
            "KAFKA_BOOTSTRAP_SERVERS",
            "STRIPE_API_BASE",
            "METERLINE_PARTITIONS",
        ]
    )


def test_config_check_exits_2_and_names_each_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_HTTP_PORT", "0")
    monkeypatch.setenv("METERLINE_ORG_ID", "bad org id!")
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code == 2
    assert "METERLINE_HTTP_PORT" in result.output
    assert "METERLINE_ORG_ID" in result.output


def test_config_check_accepts_defaults() -> None:
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "settings are valid" in result.output
