"""The worker's Kafka writes compress lz4 at the fast level (aiokafka's own is level 9,
~6x slower, on the event loop), and every reader still reads them."""

from __future__ import annotations

import aiokafka.codec
import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from streams.app import create_app
from streams.compression import LZ4_LEVEL
from streams.settings import Settings

LZ4 = 3  # the record batch's codec attribute (Kafka protocol)
NONE = 0
HEADER = 61  # bytes of a v2 record batch header: what follows are its (compressed) records


def batch(compression: int, values: list[bytes]) -> bytes:
    """A record batch as faust's producer builds one (aiokafka's builder)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 22,
    )
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=1_700_000_000_000, key=b"acct", value=value, headers=[])
    return bytes(builder.build())


def deltas(count: int) -> list[bytes]:
    return [
        orjson.dumps({"account": f"acct-{n % 97:05d}", "meter": "api_calls", "sum": str(n * 7)})
        for n in range(count)
    ]


def test_a_worker_compresses_its_record_batches_at_lz4s_fast_level() -> None:
    create_app(Settings(partitions=1))
    values = deltas(2_000)
    records = batch(NONE, values)[HEADER:]

    compressed = batch(LZ4, values)[HEADER:]

    fast = aiokafka.codec.lz4_encode(records, level=LZ4_LEVEL)
    slow = aiokafka.codec.lz4_encode(records, level=9)
    assert fast != slow  # the two levels give different frames for these records
    assert compressed == fast


def test_a_fast_lz4_batch_reads_back_whole() -> None:
    create_app(Settings(partitions=1))
    values = deltas(500)

    read = list(MemoryRecords(batch(LZ4, values)).next_batch())

    assert [record.value for record in read] == values
    assert all(record.key == b"acct" for record in read)
