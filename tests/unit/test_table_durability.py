"""An agent's table writes count once Kafka acknowledged them: `AccountTable.confirm`
returns only then, and a write Kafka refused is sent again with the key's latest value."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest

from streams.tables import AccountTable, account_table


class FakeChangelog:
    """Stands in for the producer: every changelog send returns a future we settle."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None, asyncio.Future[Any]]] = []

    def send(self, partition: Any, key: bytes, value: Any, *args: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.message = SimpleNamespace(key=key, partition=partition)  # type: ignore[attr-defined]
        self.sent.append((key, value, future))
        return future


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> tuple[AccountTable, FakeChangelog]:
    changelog = FakeChangelog()
    monkeypatch.setattr(faust.Table, "send_changelog", changelog.send)
    app = faust.App(f"durability-{id(changelog)}", broker="kafka://127.0.0.1:1")
    return account_table(app, "usage", 6, "test"), changelog


async def test_confirm_waits_until_kafka_acknowledged_every_write(
    table: tuple[AccountTable, FakeChangelog],
) -> None:
    usage, changelog = table
    usage.send_changelog(1, b"acme|1", b"v1")
    usage.send_changelog(2, b"globex|1", b"v1")
    confirming = asyncio.ensure_future(usage.confirm())
    await asyncio.sleep(0.01)
    assert not confirming.done()
    changelog.sent[0][2].set_result("ok")
    await asyncio.sleep(0.01)
    assert not confirming.done()
    changelog.sent[1][2].set_result("ok")
    await asyncio.wait_for(confirming, 1)
    assert usage.unconfirmed == 0


async def test_a_refused_write_is_sent_again_with_the_keys_latest_value(
    table: tuple[AccountTable, FakeChangelog],
) -> None:
    usage, changelog = table
    usage.data[b"acme|1"] = b"v2"  # a later write overtook the refused one
    usage.send_changelog(1, b"acme|1", b"v1")
    confirming = asyncio.ensure_future(usage.confirm())
    changelog.sent[0][2].set_exception(RuntimeError("leader not available"))
    while len(changelog.sent) < 2:
        await asyncio.sleep(0.01)
    key, value, retry = changelog.sent[1]
    assert (key, value) == (b"acme|1", b"v2")
    assert not confirming.done()
    retry.set_result("ok")
    await asyncio.wait_for(confirming, 1)


async def test_a_second_caller_returns_only_after_the_first_callers_writes_landed(
    table: tuple[AccountTable, FakeChangelog],
) -> None:
    usage, changelog = table
    usage.send_changelog(1, b"acme|1", b"v1")
    first = asyncio.ensure_future(usage.confirm())  # e.g. the retention timer
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(usage.confirm())  # the agent, whose write it was
    await asyncio.sleep(0.01)
    assert not second.done()
    changelog.sent[0][2].set_result("ok")
    await asyncio.wait_for(asyncio.gather(first, second), 1)
