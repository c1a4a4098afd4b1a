"""training.malloc: after keep_freed_memory(), large activations come from the heap, stay there when freed, and
re-allocating them costs no page faults.

Each case runs in a fresh process, since mallopt settings are process-wide and cannot be undone, and without
GLIBC_TUNABLES (the Makefile's huge pages would fault 2 MiB at a time and hide the 4 KiB count). glibc's own
accounting (``mallinfo2``) is the independent witness of where a block lives.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")

PLACEMENT = """
import ctypes, sys, torch
from training.malloc import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    assert keep_freed_memory()
t = torch.ones(4 * 2**20)  # 16 MiB
mapped = libc.mallinfo2().hblkhd
del t
print(mapped, libc.mallinfo2().fordblks)
"""

ROUNDS = """
import resource, torch
from training.malloc import keep_freed_memory
assert keep_freed_memory()
faults = []
for _ in range(6):  # a training step's pattern in miniature: allocate and touch 8 x 16 MiB, free them all
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(4 * 2**20) for _ in range(8)]
    del tensors
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""

MIB16 = 16 * 2**20


def run(code: str, *args: str) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env)
    return [int(v) for v in res.stdout.split()]


def test_large_blocks_move_from_mmap_to_a_heap_that_keeps_them():
    mapped, _ = run(PLACEMENT, "default")
    assert mapped >= MIB16, "control: glibc's default serves a fresh 16 MiB block with mmap"
    mapped, free_after = run(PLACEMENT, "keep")
    assert mapped < MIB16, "with keep_freed_memory the 16 MiB block should come from the heap"
    assert free_after >= MIB16, "the freed 16 MiB should stay in the heap, not go back to the OS"


def test_reallocating_freed_activations_costs_no_page_faults():
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" in thp.read_text():
        pytest.skip("transparent huge pages are 'always' here: memory faults in 2 MiB at a time, not 4 KiB")
    faults = run(ROUNDS)
    assert faults[0] >= 8 * MIB16 // 4096 // 2, f"the first round must fault its memory in: {faults}"
    assert sum(faults[3:]) == 0, f"rounds 4-6 should reuse the kept pages, page faults per round: {faults}"
