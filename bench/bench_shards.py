"""Sharded extraction: one process vs two on the same cores, and each engine's overhead.

On one generated corpus (N files of 16 kHz noise, durations uniform in [min, max] s) and one
random-init checkpoint, each side runs ``w2v embed`` through its CLI as a user would
(every process imports torch and loads the model itself):

* ``local, T threads``: one process, ``OMP_NUM_THREADS=T``; the baseline is T = the cores;
* ``2 shards (SLURM variables)``: two processes at once, one thread each, as two tasks of
  a SLURM job (``SLURM_PROCID``/``SLURM_NTASKS`` set by hand), then ``w2v merge``;
* ``torchrun 2 ranks``: ``torchrun --standalone --nproc-per-node 2`` on CPU (gloo barrier,
  rank 0 merges), one thread each;
* ``ray, 2 actors``: ``--engine ray --actors 2`` (a local Ray started by the run: its
  start-up is in the time, as it would not be on a running cluster).

Every side writes the same bytes (checked: outputs compared with the first side's at the
same thread count). Reported: wall time (start of the processes to the last one's end),
audio seconds per second, and the ratio to the baseline. Last, the cost of
``--dtype-out float16``: a ``--pool none`` run stored both ways, compared frame by frame.

    python -m bench.bench_shards                         # base, 16 files of 2-8 s
    python -m bench.bench_shards --size tiny --files 8   # a quick look
    python -m bench.bench_shards --out bench/RESULTS.md  # append the tables
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from w2v.convert.checkpoint import Checkpoint, save

import w2v
from bench.common import machine_description
from tests.helpers import TINY_W2V  # the tests' tiny config: one definition
from w2v.config import Config

REPO = Path(__file__).resolve().parent.parent


def _corpus(root: Path, files: int, lo: float, hi: float) -> float:
    rng = np.random.default_rng(0)
    total = 0.0
    for i in range(files):
        seconds = float(rng.uniform(lo, hi))
        total += seconds
        wave = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        sf.write(root / f"f{i:04d}.wav", wave, 16000, subtype="PCM_16")
    return total


def _checkpoint(path: Path, size: str) -> None:
    torch.manual_seed(0)
    model = w2v.from_config(Config(**TINY_W2V) if size == "tiny" else "wav2vec2-base")
    save(Checkpoint(model.config, model.state_dict()), path)


def _env(threads: int, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        if name not in extra:
            env.pop(name, None)
    return env


def _run(commands: list[tuple[list[str], dict[str, str]]]) -> float:
    """Start every command at once; seconds until the last one ends (each must exit 0)."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        for cmd, env in commands
    ]
    for p, (cmd, _) in zip(procs, commands, strict=True):
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err}")
    return time.perf_counter() - start


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.npy"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "base"), default="base")
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--max-seconds", type=float, default=8.0)
    ap.add_argument("--layers", default="0,6,12")
    ap.add_argument("--skip", nargs="*", default=[], choices=("torchrun", "ray", "dtype"))
    ap.add_argument("--out", type=Path, default=None, help="append the tables to this file")
    args = ap.parse_args()
    layers = "0,1,2" if args.size == "tiny" else args.layers
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="w2v-bench-shards-"))
    try:
        audio, ckpt = work / "audio", work / "ckpt"
        audio.mkdir()
        seconds = _corpus(audio, args.files, args.min_seconds, args.max_seconds)
        _checkpoint(ckpt, args.size)
        embed = [sys.executable, "-m", "w2v.cli", "embed", str(audio), "--model", str(ckpt)]
        embed += ["--layers", layers, "--quiet"]
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        rows: list[tuple[str, float, bool | None]] = []

        def side(name: str, out: Path, commands, reference: Path | None, merge: bool = False):
            wall = _run(commands)
            if merge:
                wall += _run([([sys.executable, "-m", "w2v.cli", "merge", str(out)], _env(1))])
            same = None if reference is None else _outputs(out) == _outputs(reference)
            rows.append((name, wall, same))
            print(f"{name}: {wall:.1f} s, same bytes: {same}", file=sys.stderr)

        one = work / "local1"
        side("local, 1 thread", one, [([*embed, "--out", str(one)], _env(1))], None)
        full = work / "localN"
        side(f"local, {cores} threads", full, [([*embed, "--out", str(full)], _env(cores))], None)
        shards = work / "slurm"
        slurm = [
            ([*embed, "--out", str(shards)], _env(1, SLURM_PROCID=str(i), SLURM_NTASKS="2"))
            for i in range(2)
        ]
        side("2 shards (SLURM variables), 1 thread each", shards, slurm, one, merge=True)
        if "torchrun" not in args.skip:
            tr = work / "torchrun"
            launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            launch += ["--nproc-per-node", "2", "-m", "w2v.cli", *embed[3:], "--out", str(tr)]
            side("torchrun 2 ranks, 1 thread each", tr, [(launch, _env(1))], one)
        if "ray" not in args.skip:
            ray_out = work / "ray"
            cmd = [*embed, "--out", str(ray_out), "--engine", "ray", "--actors", "2"]
            side("ray, 2 actors of 1 CPU (local Ray started)", ray_out, [(cmd, _env(1))], one)
        precision = None
        if "dtype" not in args.skip:
            precision = _float16_cost(embed, work)
        load_after = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = next(wall for name, wall, _ in rows if name.startswith(f"local, {cores}"))
    lines = [
        f"`python -m bench.bench_shards --size {args.size} --files {args.files} "
        f"--min-seconds {args.min_seconds:g} --max-seconds {args.max_seconds:g}`: "
        f"{seconds:.0f} s of audio, layers {layers}; {machine_description('cpu')}; "
        f"load average before {' '.join(load_before)}, after {' '.join(load_after)}.",
        "",
        "| side | wall s | audio s / s | vs local on all cores | same bytes as local, 1 thread |",
        "|---|---|---|---|---|",
    ]
    for name, wall, same in rows:
        mark = "-" if same is None else ("yes" if same else "**no**")
        lines.append(
            f"| {name} | {wall:.1f} | {seconds / wall:.2f} | {base / wall:.2f}x | {mark} |"
        )
    if precision is not None:
        lines += ["", precision]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + text)


def _float16_cost(embed: list[str], work: Path) -> str:
    """``--dtype-out float16`` against float32 on the same frames (``--pool none``)."""
    outs = {}
    for dtype in ("float32", "float16"):
        outs[dtype] = work / f"frames-{dtype}"
        cmd = [*embed, "--pool", "none", "--dtype-out", dtype, "--out", str(outs[dtype])]
        _run([(cmd, _env(len(os.sched_getaffinity(0))))])
    worst_abs = worst_rel = worst_frame = 0.0
    worst_cos = 1.0
    size = {"float32": 0, "float16": 0}
    normal = 2.0**-14  # float16's smallest normal number: below it, steps of 2^-24
    for p in sorted(outs["float32"].glob("*.npy")):
        a = np.load(p).astype(np.float64)  # (layers, frames, dim)
        b = np.load(outs["float16"] / p.name).astype(np.float64)
        size["float32"] += p.stat().st_size
        size["float16"] += (outs["float16"] / p.name).stat().st_size
        diff = np.abs(a - b)
        worst_abs = max(worst_abs, float(diff.max()))
        big = np.abs(a) >= normal
        worst_rel = max(worst_rel, float((diff[big] / np.abs(a[big])).max()))
        worst_frame = max(worst_frame, float((diff.max(-1) / np.abs(a).max(-1)).max()))
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        worst_cos = min(worst_cos, float(cos.min()))
    return (
        f"`--dtype-out float16` on the same run's frames (`--pool none`): "
        f"{size['float16'] / size['float32']:.3f} of the disk; max |difference| "
        f"{worst_abs:.2e}; max relative difference {worst_rel:.2e} for values of at least "
        f"2^-14 (float16 rounds to 2^-11 = 4.9e-04 relative; smaller values to steps of "
        f"2^-24); max |difference| over the frame's largest |value| {worst_frame:.2e}; min "
        f"per-frame cosine similarity to float32 {worst_cos:.8f}."
    )


if __name__ == "__main__":
    main()
