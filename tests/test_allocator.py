"""tune_allocator: freed activation memory is reused instead of page-faulted back."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
import w2v
tuned = w2v.tune_allocator() if sys.argv[1] == "1" else None
def touch():
    x = torch.empty(64 * 2**20 // 4)  # 64 MiB, above glibc's default mmap threshold
    x.fill_(1.0)
    del x
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(tune: bool) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "1" if tune else "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_second_large_allocation_does_not_fault_after_tuning():
    _, default = _faults(False)
    tuned, after = _faults(True)
    if tuned != "True":
        pytest.skip("not a glibc malloc")
    pages = 64 * 2**20 // 4096
    assert default > pages // 2, f"expected the default allocator to fault ({default} faults)"
    assert after < pages // 20, f"{after} page faults re-touching a freed 64 MiB block"


def test_tune_allocator_is_idempotent():
    import w2v

    first = w2v.tune_allocator()
    assert isinstance(first, bool)
    assert w2v.tune_allocator() is first
