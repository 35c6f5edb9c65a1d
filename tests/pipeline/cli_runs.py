"""Helpers for tests that run ``w2v embed`` as a user would: a tiny checkpoint, short audio
files, hand-made WAV headers, and the CLI in a subprocess with its peak memory measured."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from w2v.convert.checkpoint import Checkpoint, save

import w2v
from tests.helpers import PEAK_RSS_CODE, REPO, TINY_W2V
from w2v.config import Config
from w2v.pipeline import Progress
from w2v.pipeline.outputs import MANIFEST

# Runs main() and reports the process's own peak resident memory on the last stderr line.
_WRAPPER = PEAK_RSS_CODE + (
    "import sys\n"
    "from w2v.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:\n"
    "    print(f'MAXRSS_KB {peak_rss_kb()}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def tiny_checkpoint(directory: Path) -> Path:
    """A saved w2v checkpoint of a 2-layer, 32-dim model (seeded)."""
    torch.manual_seed(0)
    model = w2v.from_config(Config(**TINY_W2V))
    save(Checkpoint(model.config, model.state_dict()), directory)
    return directory


def write_audio(path: Path, seconds: float = 0.5, rate: int = 16000, seed: int = 0) -> Path:
    """Mono noise at ``rate``; ``path`` may be ``bytes`` (a name that is not UTF-8)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = 0.1 * np.random.default_rng(seed).standard_normal(int(rate * seconds))
    with open(path, "wb") as f:  # soundfile cannot open a str holding surrogates
        sf.write(f, data.astype(np.float32), rate, format="WAV")
    return path


def wav_bytes(rate: int, samples: np.ndarray) -> bytes:
    """A 16-bit mono PCM WAV whose header says ``rate`` Hz, whatever libsndfile would accept
    to write."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def cli_command(*args: str | os.PathLike) -> list[str | bytes]:
    """``python -c WRAPPER embed ARGS``: the CLI, reporting its peak memory."""
    return [sys.executable, "-c", _WRAPPER, "embed", *(os.fsdecode(a) for a in args)]


def run_cli(*args: str | os.PathLike, timeout: float = 120) -> tuple[int, str, float]:
    """Run ``w2v embed ARGS`` in a subprocess: ``(exit code, stderr, peak RSS in MB)``.

    Asserts that nothing printed a traceback.
    """
    proc = subprocess.run(
        cli_command(*args), cwd=REPO, env=env(), capture_output=True, timeout=timeout
    )
    err = proc.stderr.decode("utf-8", "backslashreplace")
    assert "Traceback" not in err, err
    lines = err.splitlines()
    peak = [float(x.split()[1]) / 1024 for x in lines if x.startswith("MAXRSS_KB ")]
    rest = "\n".join(x for x in lines if not x.startswith("MAXRSS_KB "))
    return proc.returncode, rest, peak[-1] if peak else float("nan")


def manifest_lines(out: Path) -> list[dict]:
    """The manifest's lines parsed (it must be valid UTF-8 JSON Lines)."""
    text = (out / MANIFEST).read_bytes().decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


class Killed(Exception):
    """Raised by :class:`KillAfter`: a run stopped as if the process had been killed."""


class KillAfter(Progress):
    """Progress that raises :class:`Killed` when the ``n``-th item is reported, mid-batch
    (the batch's other items are not written)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def item(self, entry: dict) -> None:
        self.n -= 1
        if self.n == 0:
            raise Killed
