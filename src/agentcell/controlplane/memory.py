"""Giving the memory of closed connections back to the system (glibc's allocator).

Each TLS connection holds a 256 KiB buffer of asyncio's and OpenSSL's own allocations. glibc
raises its mmap threshold each time an mmap'd block is freed, so after the first closed
connection those buffers come from the heap; and freed heap memory stays with the process.
After a flood of connections the server would keep its peak size for good. Two calls of
glibc's documented API prevent that: :func:`keep_mmap_threshold` once at start, and
:func:`release_free_memory` (``malloc_trim``) after connections have closed. Elsewhere than
glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

__all__ = ["keep_mmap_threshold", "release_free_memory"]

_M_MMAP_THRESHOLD = -3  # mallopt() parameter, from glibc's malloc.h
_DEFAULT_MMAP_THRESHOLD = 128 * 1024


@functools.cache
def _glibc_function(name: str) -> Any:
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return function


def keep_mmap_threshold() -> None:
    """Fix the mmap threshold at glibc's default, so large buffers stay mmap'd and are
    returned to the system when freed."""
    mallopt = _glibc_function("mallopt")
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)


def release_free_memory() -> None:
    """Return the heap's free pages to the system (a few milliseconds for a large heap)."""
    malloc_trim = _glibc_function("malloc_trim")
    if malloc_trim is not None:
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim.restype = ctypes.c_int
        malloc_trim(0)
