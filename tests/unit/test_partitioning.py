from __future__ import annotations

import pytest

from streams.partitioning import partition_for

# murmur2 hashes from Apache Kafka's own UtilsTest (org.apache.kafka.common.utils.Utils).
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 6, 7, 12])
def test_partition_is_the_java_clients_positive_murmur2_modulo(partitions: int) -> None:
    for key, java_hash in JAVA_MURMUR2.items():
        assert partition_for(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


def test_accounts_spread_over_every_partition() -> None:
    assert {partition_for(f"acct-{i}", 6) for i in range(100)} == set(range(6))
