"""tune_allocator: which blocks glibc malloc serves from mmap (given back on free) or its heap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Bytes in mmap-served blocks (glibc mallinfo2().hblkhd) grown by one tensor of SECOND MiB,
# allocated after a FIRST MiB one was freed. With glibc's defaults that free raises the mmap
# threshold to FIRST MiB: smaller blocks then come from the heap, larger ones from mmap.
PROBE = """
import ctypes, sys, torch
import w2v

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
mode, first, second = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tuned = w2v.tune_allocator(mode) if mode != "glibc" else None
big = torch.empty(first * 2**20 // 4)
del big
before = libc.mallinfo2().hblkhd
x = torch.empty(second * 2**20 // 4)
print(tuned, libc.mallinfo2().hblkhd - before)
"""
MiB = 2**20


def _mmapped(mode: str, first: int = 16, second: int = 8) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(first), str(second)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    ).stdout.split()
    return out[0], int(out[1])


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


glibc_only = pytest.mark.skipif(not _glibc(), reason="glibc malloc (mallinfo2) only")


@glibc_only
def test_glibc_default_moves_its_threshold():
    """glibc's dynamic threshold: after a 16 MiB free, 8 MiB comes from the heap and
    24 MiB from mmap."""
    assert _mmapped("glibc", 16, 8)[1] == 0
    assert _mmapped("glibc", 16, 24)[1] >= 24 * MiB


@glibc_only
def test_bounded_fixes_the_threshold_at_32_mib():
    tuned, mmapped = _mmapped("bounded", 16, 24)
    assert tuned == "True"
    assert mmapped == 0, "a block below 32 MiB should come from the heap"
    assert _mmapped("bounded", 16, 48)[1] >= 48 * MiB, "a block above 32 MiB is mmapped"


@glibc_only
def test_reuse_serves_large_blocks_from_the_heap():
    tuned, mmapped = _mmapped("reuse", 16, 48)
    assert tuned == "True"
    assert mmapped == 0


# Resident memory (MiB) kept by 64 MiB of freed heap blocks that a live block allocated
# after them pins in the heap, then after w2v.allocator.after_batch().
RELEASE = """
import sys, torch
import w2v
from w2v import allocator

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

w2v.tune_allocator(sys.argv[1])
blocks = [torch.ones(4 * 2**20 // 4) for _ in range(16)]
pin = torch.ones(2**20 // 4)
base = rss() - 64
del blocks
kept = rss() - base
allocator.after_batch()
print(round(kept), round(rss() - base))
"""


@glibc_only
@pytest.mark.parametrize("mode", ["bounded", "reuse"])
def test_after_batch_gives_freed_memory_back_in_bounded_mode(mode):
    out = subprocess.run(
        [sys.executable, "-c", RELEASE, mode], capture_output=True, text=True, check=True
    )
    kept, after = (int(v) for v in out.stdout.split())
    assert kept >= 48, "the freed blocks should still be resident before the release"
    if mode == "bounded":
        assert after <= 16, f"bounded mode should give them back, {after} MiB still resident"
    else:
        assert after >= 48, "reuse mode keeps freed memory"


def test_tune_allocator_modes():
    import w2v

    assert isinstance(w2v.tune_allocator(), bool)
    assert w2v.tune_allocator("bounded") is w2v.tune_allocator("bounded")
    with pytest.raises(ValueError, match="bounded, reuse"):
        w2v.tune_allocator("fast")
