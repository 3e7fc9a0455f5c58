"""The memory-allocator setting evonas applies to its own process, at import.

XLA:CPU takes a fresh scratch buffer for every run of a compiled program (tens to hundreds of
MB for the models here). glibc's malloc serves blocks that large with `mmap` and returns them
to the system on `free`, so every run faults all their pages in again: on a 2-core machine
that cost one jitted step of a d=64 model 1.4-1.6x in time. Telling glibc to keep freed memory
(no `mmap` for large blocks, no trimming, 256 MiB of padding when the heap grows) removes that
cost for buffers allocated by the main thread. It cannot help blocks larger than 64 MiB
allocated by XLA's worker threads: glibc's per-thread arenas map those directly whatever the
settings say. A retaining allocator preloaded into the whole process fixes both; see
`experiments/README.md` ("Allocator"). Population training allocates its scratch once per
call of many fused steps, so it depends far less on the allocator than a one-step-per-call loop.
"""

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h) and the values evonas sets.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
GLIBC_SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 256 * 2**20}
# The same setting as glibc environment variables, for processes that do not import evonas.
GLIBC_ENVIRONMENT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1), "MALLOC_TOP_PAD_": str(256 * 2**20)}
OPT_OUT = "EVONAS_MALLOPT"  # =0 keeps glibc's defaults (for A/B measurements)
RETAINING_ALLOCATORS = ("jemalloc", "mimalloc", "tcmalloc")


def configure_allocator() -> str:
    """Makes glibc's malloc keep freed memory, where glibc serves malloc; returns what is in use.

    Harmless elsewhere: without glibc, under a preloaded allocator, or with EVONAS_MALLOPT=0 it
    changes nothing and says so.
    """
    preloaded = [name for name in RETAINING_ALLOCATORS if name in os.environ.get("LD_PRELOAD", "")]
    if preloaded:
        return f"{preloaded[0]} (LD_PRELOAD)"
    if platform.libc_ver()[0] != "glibc":
        return "system default (not glibc)"
    if os.environ.get(OPT_OUT) == "0":
        return f"glibc default ({OPT_OUT}=0)"
    libc = ctypes.CDLL(None)
    if not all(libc.mallopt(param, value) for param, value in GLIBC_SETTINGS.items()):
        return "glibc default (mallopt refused)"
    return "glibc mallopt " + " ".join(f"{name}={value}" for name, value in GLIBC_ENVIRONMENT.items())

