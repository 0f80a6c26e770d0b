"""Alert webhook signatures and retry decisions, as a receiver and the connector see them."""

from __future__ import annotations

import pytest

from connectors.alert_webhooks import AlertWebhooks, retried, signature, verify
from streams.settings import Settings

BODY = b'{"id":"alert_1"}'


def test_a_signature_verifies_only_with_its_secret_body_and_within_the_tolerance() -> None:
    header = signature("s3cret", 1_700_000_000, BODY)
    assert header.startswith("t=1700000000,v1=")
    assert verify("s3cret", header, BODY, now=1_700_000_100)
    assert not verify("other", header, BODY, now=1_700_000_100)
    assert not verify("s3cret", header, BODY + b" ", now=1_700_000_100)
    assert not verify("s3cret", header, BODY, now=1_700_000_301)
    assert not verify("s3cret", "t=abc,v1=00", BODY, now=1_700_000_000)
    assert not verify("s3cret", "garbage", BODY, now=1_700_000_000)


@pytest.mark.parametrize(
    ("status", "again"),
    [
        (None, True),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (200, False),
        (204, False),
        (400, False),
        (401, False),
        (404, False),
        (410, False),
    ],
)
def test_only_timeouts_throttling_server_errors_and_no_answer_are_sent_again(
    status: int | None, again: bool
) -> None:
    assert retried(status) is again


@pytest.mark.parametrize(
    "values",
    [{}, {"alert_webhook_url": "http://x/hook"}, {"alert_webhook_secret": "s"}],
)
def test_the_connector_needs_a_url_and_a_secret_and_says_which(values: dict[str, str]) -> None:
    with pytest.raises(
        ValueError, match="METERLINE_ALERT_WEBHOOK_URL and METERLINE_ALERT_WEBHOOK_SECRET"
    ):
        AlertWebhooks(Settings(**values))  # type: ignore[arg-type]


def test_a_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="alert_webhook_url"):
        Settings(alert_webhook_url="ftp://x/hook")
