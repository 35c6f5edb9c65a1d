"""tune_allocator: large blocks come from malloc's heap (kept and reused), not fresh mmaps."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Bytes in mmap-served blocks (glibc mallinfo2().hblkhd) grown by one 64 MiB tensor.
PROBE = """
import ctypes, sys, torch
import w2v

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = w2v.tune_allocator() if sys.argv[1] == "1" else None
before = libc.mallinfo2().hblkhd
x = torch.empty(64 * 2**20 // 4)  # 64 MiB, above glibc's default mmap threshold
print(tuned, libc.mallinfo2().hblkhd - before)
"""


def _mmapped(tune: bool, **env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "1" if tune else "0"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
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
def test_large_blocks_come_from_the_heap_after_tuning():
    _, default = _mmapped(False)
    assert default >= 64 * 2**20, "expected the default allocator to mmap a 64 MiB block"
    tuned, after = _mmapped(True)
    assert tuned == "True"
    assert after == 0, f"{after} bytes still served by mmap after tune_allocator()"


def test_tune_allocator_is_idempotent():
    import w2v

    first = w2v.tune_allocator()
    assert isinstance(first, bool)
    assert w2v.tune_allocator() is first
