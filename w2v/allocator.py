"""How glibc malloc treats the large, short-lived blocks of a forward pass (CPU only).

Activations are tens to hundreds of MB (layer 0 of the conv encoder: 512
channels × 3200 frames per second of audio). glibc serves a block that large
from ``mmap`` and returns it on free, but each such free also raises its mmap
threshold (up to 32 MiB): from then on blocks below the new threshold come
from the heap, where a stream of differently sized batches fragments memory
that is never given back. Measured on 2 cores, wav2vec2-base fp32, 300 calls
of batch 2 with 150 different lengths (2-3.5 s): resident memory grew from
1.0 to 5.4 GiB with glibc's defaults and stayed at 0.67-0.74 GiB in
"bounded" mode, in the same time (235 s); bf16 grew to 2.1 GiB against 1.2.

Two modes, both process-wide, glibc only (a no-op elsewhere):

* ``"bounded"`` (what ``w2v embed`` uses): the mmap threshold is fixed at
  1 MiB, so every large block comes from mmap and goes back to the system
  when freed; resident memory follows the live tensors.
* ``"reuse"``: thresholds of 1 GiB, so freed blocks stay in the heap and are
  reused without page faults: 6-11% faster for repeated fp32 calls of one
  shape, but resident memory stays at its high-water mark and mixed sizes
  fragment it (a one-file-at-a-time transformers loop over 1-30 s files grew
  to 6.1 GiB resident).

``w2v embed`` reads ``W2V_ALLOCATOR`` (``bounded``, the default; ``reuse``;
``glibc`` to leave malloc alone). A library user running many differently
sized batches in one process can call ``w2v.tune_allocator()`` once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MODES = {
    # mode → ((parameter, value), ...)
    "bounded": ((_M_MMAP_THRESHOLD, 1 << 20),),
    "reuse": ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30)),
}
MODES = tuple(_MODES)


def tune_allocator(mode: str = "bounded") -> bool:
    """Set glibc malloc's thresholds for ``mode`` ("bounded" or "reuse", see the module
    docstring). Returns True if it took effect, False on non-glibc platforms
    (macOS, Windows, musl). Repeatable; the last call wins."""
    if mode not in _MODES:
        raise ValueError(f"allocator mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in _MODES[mode]])
