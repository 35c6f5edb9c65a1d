"""How glibc malloc treats the large, short-lived blocks of a forward pass (CPU only).

Activations are megabytes to hundreds of megabytes. glibc serves a block above
its mmap threshold from ``mmap`` and unmaps it on free, so every later block of
that size arrives as fresh pages, each costing a page fault; each such free also
raises the threshold (up to 32 MiB), so that smaller blocks come from the heap.
Heap memory is reused without faults, but freed heap memory in the middle is
never given back: over a stream of differently sized batches the heap fragments
and resident memory keeps growing. The measurements behind the modes below are in
``bench/RESULTS.md`` (section "Allocator").

Two modes, both process-wide, glibc only (a no-op elsewhere):

* ``"bounded"`` (what ``w2v embed`` uses): the mmap threshold is fixed at
  32 MiB (glibc's own ceiling), so blocks below it are reused from the heap
  from the first call on, and :func:`release_memory` after each batch gives
  freed heap memory back (``malloc_trim``); resident memory between batches
  follows the live tensors. (A lower threshold maps every activation afresh and
  is slower for the same resident memory.)
* ``"reuse"``: thresholds of 1 GiB, so freed blocks stay in the heap and are
  reused without page faults, and nothing is given back: resident memory stays
  at its high-water mark and mixed sizes fragment it.

``w2v embed`` reads ``W2V_ALLOCATOR`` (``bounded``, the default; ``reuse``;
``glibc`` to leave malloc alone). A library user running many differently
sized batches in one process can call ``w2v.tune_allocator()`` once at
start-up and ``w2v.release_memory()`` between batches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MODES = {
    # mode → ((parameter, value), ...); a fixed mmap threshold also stops glibc moving it
    "bounded": ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 64 << 20)),
    "reuse": ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30)),
}
MODES = tuple(_MODES)
_mode: str | None = None  # the last mode that took effect in this process


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, with mallopt and malloc_trim typed; None elsewhere. Cached: finding the
    library runs ``ldconfig``, and :func:`release_memory` runs after every batch."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):  # a libc without them (musl)
        return None
    return libc


def tune_allocator(mode: str = "bounded") -> bool:
    """Set glibc malloc's thresholds for ``mode`` ("bounded" or "reuse", see the module
    docstring). Returns True if it took effect, False on non-glibc platforms
    (macOS, Windows, musl). Repeatable; the last call wins."""
    if mode not in _MODES:
        raise ValueError(f"allocator mode must be one of {', '.join(MODES)}, got {mode!r}")
    global _mode
    libc = _libc()
    if libc is None:
        return False
    ok = all([libc.mallopt(param, value) == 1 for param, value in _MODES[mode]])
    if ok:
        _mode = mode
    return ok


def release_memory() -> bool:
    """Give freed heap memory back to the system (glibc ``malloc_trim(0)``): resident
    memory drops to what live objects use, and reused pages fault in again. Returns
    whether anything was given back; False on non-glibc platforms."""
    libc = _libc()
    if libc is None:
        return False
    return libc.malloc_trim(0) == 1


def after_batch() -> None:
    """What the embedding pipeline calls after each batch: in "bounded" mode,
    :func:`release_memory`; otherwise nothing."""
    if _mode == "bounded":
        release_memory()
