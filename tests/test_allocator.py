"""tune_allocator: which blocks glibc malloc serves from mmap (given back on free) or its heap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Bytes in mmap-served blocks (glibc mallinfo2().hblkhd) grown by one 8 MiB tensor, allocated
# after a 16 MiB one was freed: with glibc's defaults that free raised the mmap threshold to
# 16 MiB, so the 8 MiB block comes from the heap (and stays there once freed).
PROBE = """
import ctypes, sys, torch
import w2v

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
mode = sys.argv[1]
tuned = w2v.tune_allocator(mode) if mode != "glibc" else None
big = torch.empty(16 * 2**20 // 4)
del big
before = libc.mallinfo2().hblkhd
x = torch.empty(8 * 2**20 // 4)
print(tuned, libc.mallinfo2().hblkhd - before)
"""
MiB = 2**20


def _mmapped(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
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
def test_glibc_default_moves_large_blocks_to_the_heap():
    """The behaviour "bounded" exists to undo: after a large free, glibc's dynamic
    threshold serves the next large block from the heap."""
    _, mmapped = _mmapped("glibc")
    assert mmapped == 0


@glibc_only
def test_bounded_keeps_large_blocks_on_mmap():
    tuned, mmapped = _mmapped("bounded")
    assert tuned == "True"
    assert mmapped >= 8 * MiB, "a block above 1 MiB should be mmapped (and returned on free)"


@glibc_only
def test_reuse_serves_large_blocks_from_the_heap():
    tuned, mmapped = _mmapped("reuse")
    assert tuned == "True"
    assert mmapped == 0


def test_tune_allocator_modes():
    import w2v

    assert isinstance(w2v.tune_allocator(), bool)
    assert w2v.tune_allocator("bounded") is w2v.tune_allocator("bounded")
    with pytest.raises(ValueError, match="bounded, reuse"):
        w2v.tune_allocator("fast")
