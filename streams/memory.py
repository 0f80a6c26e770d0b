"""Giving memory a batch freed back to the operating system.

glibc keeps what a thread frees in that thread's arena, resident, for the thread's next
allocations. A usage batch makes and drops its Python objects (the deltas' bytes, the
lists the engine hands back) on the engine's thread, so its arena stays as large as the
largest batch, and a second thread's arena holds the same again (memory benchmark:
~100 MiB in two arenas). `malloc_trim(0)` returns the free pages of every arena.
Elsewhere (musl, macOS) there is no such call and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def give_back() -> bool:
    """Return the allocator's free pages to the OS; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
