"""Memory allocator settings for the job's processes: keep freed memory for reuse instead of handing it
back to the kernel after every batch.

A job allocates and frees the same large buffers over and over: a shard's image bytes (tens of MB per
Arrow column), a forward pass's activations (tens of MB per layer), decoded pixels. By default glibc
serves anything over its mmap threshold with a fresh mapping and unmaps it on free, and Arrow's mimalloc
purges freed pages after 10 ms, so every batch faults the same pages in again. Where page faults are
dear (virtual machines) that costs more than the copy itself: on a 2-core VM, reading an 86 MB Parquet
column took 0.13-0.7 s with the defaults and 0.03-0.05 s with freed pages kept, and the tiny CLIP's
forward pass ran ~20 % faster. The settings only bound how much freed memory is kept around, so peak
memory is unchanged (`curate bench memory`).

glibc reads its settings from the environment at process start (Ray workers get them through their
environment) or takes them from mallopt() at any time (this process); mimalloc only reads the
environment.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations up to this come from the heap and are reused
TRIM_THRESHOLD = 256 << 20  # free heap top kept before it is returned to the kernel
TOP_PAD = 64 << 20  # extra heap grown at once
MIMALLOC_PURGE_DELAY_MS = 10_000

ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    "MALLOC_TOP_PAD_": str(TOP_PAD),
    "MIMALLOC_PURGE_DELAY": str(MIMALLOC_PURGE_DELAY_MS),
}

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters


def allocator_env() -> dict[str, str]:
    """The settings as environment variables for worker processes; values already set are kept."""
    return {name: os.environ.get(name, value) for name, value in ALLOCATOR_ENV.items()}


def tune_this_process() -> bool:
    """Apply the glibc settings to the running process (Linux with glibc); returns whether it could."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    env = allocator_env()
    ok = libc.mallopt(_M_MMAP_THRESHOLD, int(env["MALLOC_MMAP_THRESHOLD_"]))
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, int(env["MALLOC_TRIM_THRESHOLD_"]))
    ok &= libc.mallopt(_M_TOP_PAD, int(env["MALLOC_TOP_PAD_"]))
    return bool(ok)
