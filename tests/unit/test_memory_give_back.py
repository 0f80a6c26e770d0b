"""What a batch freed on the engine's thread goes back to the operating system."""

from __future__ import annotations

import sys
import threading

import pytest

from streams.memory import give_back

MIB = 1024 * 1024


def resident() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_a_thread_freed_is_given_back_though_its_arena_would_keep_it() -> None:
    kept: list[bytes] = []

    def batch() -> None:
        # 64 MiB of medium objects (below the mmap threshold), each followed by a small
        # one that stays: the freed space is in holes, not at the top of the arena where
        # glibc gives it back on its own
        made = []
        for _ in range(1024):
            made.append(b"x" * (64 * 1024))
            kept.append(b"y" * 1000)
        del made

    thread = threading.Thread(target=batch)
    thread.start()
    thread.join()
    held = resident()
    assert give_back()
    assert held - resident() > 32 * MIB
