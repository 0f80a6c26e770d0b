"""`deliver` queues a batch's records in their order and returns once Kafka acknowledged
each; a record refused before it was queued is sent again (a fake topic stands in for
faust's producer here)."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.delivery import deliver


class FakeTopic:
    """A topic whose first send waits (it starts the producer; the sends after it find
    the producer started) and whose `refuse` keys raise once before they are queued."""

    def __init__(self, refuse: set[bytes] | None = None) -> None:
        self.queued: list[bytes] = []
        self.refuse = set(refuse or ())
        self.started = False

    def get_topic_name(self) -> str:
        return "measurements.rejected"

    async def send(self, key: bytes, value: bytes, partition: int | None, force: bool) -> Any:
        if not self.started:  # the first send starts the producer and waits for it
            self.started = True
            await asyncio.sleep(0.01)
        if key in self.refuse:
            self.refuse.discard(key)
            raise ConnectionError(f"no broker for {key!r}")
        self.queued.append(key)
        acknowledged = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged


async def test_a_batchs_records_are_queued_in_their_order_though_the_first_send_waits() -> None:
    topic = FakeTopic()
    records = [(f"dead-{n}".encode(), b"{}", 0) for n in range(6)]
    await deliver(topic, records)
    assert topic.queued == [key for key, _, _ in records]


async def test_a_record_refused_before_it_was_queued_is_sent_again() -> None:
    topic = FakeTopic(refuse={b"b"})
    await asyncio.wait_for(deliver(topic, [(b"a", b"1", 0), (b"b", b"2", 0), (b"c", b"3", 0)]), 5)
    assert topic.queued == [b"a", b"c", b"b"]
