"""Keep freed memory in the process for reuse (glibc malloc), instead of page-faulting it back.

A forward pass allocates activations of tens to hundreds of MB (layer 0 of the
conv encoder: 512 channels × 3200 frames per second of audio). glibc serves
blocks that large with a fresh ``mmap`` and unmaps them on free, so the next
pass pays a page fault for every 4 KiB it touches again. Raising the mmap and
trim thresholds makes malloc keep and reuse that memory; the cost is that the
process's resident size stays at its high-water mark, and a workload of mixed
sizes can fragment the heap (a one-file-at-a-time transformers loop over 1-30 s
files grew to 6.1 GiB resident with it, 1.75-1.96 GiB without).

Measured on 2 cores (wav2vec2-base, repeated calls of one shape): fp32 forward
-11% (10 s) and -6% (60 s), bf16 +6%; ``w2v embed`` end to end: no difference.
So it is opt-in: call :func:`tune_allocator` once at start-up, or set
``W2V_TUNE_ALLOCATOR=1`` for ``w2v embed``. Process-wide, glibc only, a no-op
elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # blocks below 1 GiB come from (and return to) the heap

_applied: bool | None = None


def tune_allocator() -> bool:
    """Ask glibc malloc to keep freed blocks below 1 GiB for reuse. True if it took effect.

    Idempotent. Returns False on non-glibc platforms (macOS, Windows, musl).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
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
