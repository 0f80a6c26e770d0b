"""The lz4 level of the worker's own Kafka writes through faust's producer (aiokafka).

aiokafka compresses lz4 at level 9, lz4's high-compression mode, and it does so on the
event loop when it closes a batch: ~170 MB/s against ~1 GB/s at level 1, for batches
~10 % smaller. The usage log's deltas, megabytes a batch, cost the loop ~20 ms per batch
at level 9 while the usage engine waited for it (they now go through librdkafka, see
`streams.agents.usage`); what the worker still writes through faust (dead letters,
forwards, faust's own table changelogs) is compressed at lz4's fast level, as
librdkafka (the sinks, the HTTP edge, the billing agent, the usage log) does by
default. Every reader decodes any level: the level is not on the wire.

aiokafka offers no setting for the level, so `use_fast_lz4` replaces its encoder in the
two places aiokafka's batch builders look it up (the Cython builder reads its module
global at every call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiokafka.codec
import aiokafka.record.default_records
import aiokafka.record.legacy_records

LZ4_LEVEL = 1  # lz4's fast mode; levels 3 and up are its slow high-compression mode


def lz4_fast(payload: Any, level: int = LZ4_LEVEL) -> bytes:
    """aiokafka's lz4 frame (no linked blocks, no content checksum) at the fast level,
    whatever level aiokafka asks for."""
    return _AIOKAFKA_LZ4(payload, level=LZ4_LEVEL)


_AIOKAFKA_LZ4: Callable[..., bytes] = aiokafka.codec.lz4_encode


def _builder_modules() -> list[Any]:
    modules: list[Any] = [aiokafka.record.default_records, aiokafka.record.legacy_records]
    try:
        from aiokafka.record._crecords import default_records, legacy_records
    except ImportError:  # aiokafka without its C extensions (AIOKAFKA_NO_EXTENSIONS)
        return modules
    return [*modules, default_records, legacy_records]


def use_fast_lz4() -> None:
    """Make every aiokafka producer of this process compress lz4 at `LZ4_LEVEL`
    (idempotent)."""
    for module in _builder_modules():
        module.lz4_encode = lz4_fast
