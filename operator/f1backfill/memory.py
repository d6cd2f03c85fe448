"""Memory tuning, in one place, each setting with the figure that justified it.

The operator holds a whole fleet (10,000 backfills in under 250 MiB, see
docs/benchmarks.md) and the worker must stay far under its pod's 512 MiB; these are the
process-wide knobs both use. A no-op where the platform lacks one (glibc's malloc).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
from datetime import datetime

# glibc's malloc.h: the option number of M_ARENA_MAX for mallopt.
M_ARENA_MAX = -8
# glibc gives each thread its own malloc arena (up to eight per core); the worker's lanes
# and the operator's client threads then fragment memory. Two arenas lowered the worker's
# and the operator's peak RSS (docs/benchmarks.md).
MALLOC_ARENAS = 2
# The cyclic garbage collector's first threshold: 10,000 new container objects between
# young collections instead of Python's 700. A tick of a large fleet builds hundreds of
# thousands of small acyclic objects (statuses, conditions) that refcounting frees; with the
# default, each such tick also ran several full collections over the whole cache, a third
# of the first decision's time at 10,000 backfills.
GC_THRESHOLD = (10_000, 10, 10)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Must run before any thread starts."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)


def configure_gc() -> None:
    gc.set_threshold(*GC_THRESHOLD)


def release_memory() -> None:
    """After a burst (the operator's first tick of a large fleet leaves megabytes of freed
    response bodies behind): collect, and hand free pages back to the system rather than
    keep the peak."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def shared(text: str) -> str:
    """One object per distinct string: condition types, reasons and most messages repeat
    across a fleet's statuses (seven conditions per backfill)."""
    return sys.intern(text)


@functools.lru_cache(maxsize=4096)
def shared_time(value: str) -> datetime:
    """One datetime per distinct RFC 3339 timestamp: every condition set in one tick has
    the same time, so a cache of thousands of statuses holds a few objects, not one per
    condition. Datetimes are immutable. Raises ValueError like `datetime.fromisoformat`."""
    return datetime.fromisoformat(value)
