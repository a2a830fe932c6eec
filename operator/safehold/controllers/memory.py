"""The operator process's use of glibc malloc: fewer arenas, free memory handed back.

Most of what an idle operator's resident memory held before these was free memory the C
allocator kept: start-up (imports, botocore's service data, pydantic schemas) and each pass
over all objects leave freed blocks that glibc does not return to the kernel on its own, and
every thread that allocates gets an arena of its own (up to eight per core) keeping more.
Other C libraries (musl) are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import threading

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2
TRIM_INTERVAL_SECONDS = 30.0
_M_ARENA_MAX = -8  # glibc's mallopt parameter number for MALLOC_ARENA_MAX

_libc: ctypes.CDLL | None = None
_libc_lock = threading.Lock()
_libc_loaded = False


def _glibc() -> ctypes.CDLL | None:
    global _libc, _libc_loaded  # noqa: PLW0603 - loaded once per process
    with _libc_lock:
        if not _libc_loaded:
            _libc_loaded = True
            try:
                libc = ctypes.CDLL("libc.so.6")  # glibc's soname
            except OSError:
                libc = None
            if libc is not None and hasattr(libc, "gnu_get_libc_version"):
                _libc = libc
        return _libc


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, as MALLOC_ARENA_MAX=2 does; call before threads start.

    Done in the process rather than in the image or chart environment so that every way of
    running the operator (image, chart, tests, benchmarks) behaves the same. An explicit
    MALLOC_ARENA_MAX in the environment still wins. Returns whether the limit was set.
    """
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Hand the allocator's free pages back to the kernel (glibc's malloc_trim)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


async def release_loop(stop: asyncio.Event, interval: float = TRIM_INTERVAL_SECONDS) -> None:
    """Release free memory now and then every `interval` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(release_free_memory)
        except Exception:  # never worth stopping the operator for
            log.exception("releasing free memory failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
