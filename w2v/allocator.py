"""Keep freed memory in the process for reuse (glibc malloc), instead of page-faulting it back.

A forward pass allocates activations of tens to hundreds of MB (layer 0 of the
conv encoder: 512 channels × 3200 frames per second of audio). glibc serves
blocks that large with a fresh ``mmap`` and unmaps them on free, so the next
pass pays a page fault for every 4 KiB it touches again. On a 2-core CPU that
is 15-25% of a wav2vec2-base forward pass. Raising the mmap threshold and the
trim threshold makes malloc keep and reuse that memory; the cost is that the
process's resident size stays at its high-water mark.

``w2v embed`` calls :func:`tune_allocator` itself (``W2V_TUNE_ALLOCATOR=0`` in
the environment turns that off); library users can call it once at start-up.
It is process-wide, glibc-only, and a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # blocks below 1 GiB come from (and return to) the heap

_applied: bool | None = None


def tune_allocator() -> bool:
    """Ask glibc malloc to keep freed blocks below 1 GiB for reuse. True if it took effect.

    Idempotent. Returns False on non-glibc platforms (macOS, Windows, musl) and when the
    environment variable ``W2V_TUNE_ALLOCATOR`` is ``0``.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("W2V_TUNE_ALLOCATOR", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1 and ok
    _applied = ok
    return ok
