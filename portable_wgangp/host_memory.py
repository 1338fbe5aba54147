"""The training process's host memory: glibc's heap kept small, and XLA's CPU scheduler told to save memory.

A step allocates and frees large temporaries (XLA's and TensorFlow's CPU buffers, decoded images) from
several threads. glibc keeps what is freed in per-thread arenas (up to 8 per core) and, after a large chunk
is freed, serves ever larger requests from those arenas instead of fresh pages, so a process's resident
memory grows to the sum of what each arena once held. On the 64×64 DCGAN, 600 MB of a JAX run's 2.1 GB
peak was such freed memory, and XLA's concurrency-optimised CPU scheduler (it keeps independent operations'
buffers alive together) another 300 MB (benchmarks/README.md, "Memory"). Off glibc the heap settings do
nothing.
"""

import ctypes
import os
import sys

ARENAS = 2  # malloc arenas: threads share them instead of holding one each
MMAP_THRESHOLD = 1 << 20  # bytes: larger blocks get their own pages, returned to the system when freed
TRIM_THRESHOLD = 8 << 20  # bytes: free memory at the heap's top beyond this goes back at once
XLA_CPU_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

# mallopt's parameter (malloc.h), our value, and the environment variable and tunable that set it instead
_HEAP_SETTINGS = (
    (-8, ARENAS, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),
    (-3, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
    (-1, TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc has both; musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def configure_process() -> None:
    """Before the frameworks start: the heap settings above (each unless the operator set it, by its
    ``MALLOC_*`` variable or ``GLIBC_TUNABLES``), and (JAX backend, unless ``XLA_FLAGS`` names it) XLA's
    memory-saving CPU scheduler. The CLI calls it; an API user may call it before the first operation."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    for parameter, value, variable, tunable in _HEAP_SETTINGS if _LIBC is not None else ():
        if variable not in os.environ and tunable not in tunables:
            _LIBC.mallopt(parameter, value)
    flags = os.environ.get("XLA_FLAGS", "")
    name = XLA_CPU_SCHEDULER.split("=")[0]
    if os.environ.get("KERAS_BACKEND") == "jax" and name not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_SCHEDULER}".strip()


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (`malloc_trim(0)`: a few ms)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
