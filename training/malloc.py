"""Keep freed host memory in the process, so that CPU training does not page-fault its activations every step.

glibc serves blocks above its mmap threshold with fresh ``mmap`` pages and unmaps them on free. A training step
allocates and frees the same large activations every step, so each step pays a page fault per 4 KiB touched:
about 15% of a CPU DiT-S/2 step, seen as system time (bench/RESULTS.md). Raising the threshold to glibc's maximum
(32 MiB) and never trimming the heap lets the next step reuse the same pages.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit machines: larger values are refused


def keep_freed_memory() -> bool:
    """Tune glibc's malloc (mallopt) to reuse freed blocks up to 32 MiB; False where the C library is not glibc."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallopt"):
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    ok &= libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= libc.mallopt(M_TOP_PAD, 256 * 2**20)
    return bool(ok)
