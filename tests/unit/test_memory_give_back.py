"""What a batch freed on the engine's thread goes back to the operating system."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter: the test suite's own heap (arenas shared with earlier tests)
# would decide where these objects go.
FREED_ON_A_THREAD = textwrap.dedent(
    """
    import threading
    from streams.memory import give_back

    def resident():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    kept = []

    def batch():
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
    given = give_back()
    print(given, held - resident())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_a_thread_freed_is_given_back_though_its_arena_would_keep_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FREED_ON_A_THREAD], capture_output=True, text=True, check=True
    )
    given, released = out.stdout.split()
    assert given == "True"
    assert int(released) > 32 * 1024 * 1024
