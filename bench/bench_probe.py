"""`w2v probe`: speed of an utterance task and peak memory of a frame task, on generated data.

Utterance task (the speed target: under 60 s on 2 CPU cores): 13 layers × 10,000 pooled
vectors of 768 dims, 10 classes decodable from one layer, 5-fold CV with the inner search
of the regularisation, the control task, CKA and the learned layer weights: everything
`w2v probe` does, timed end to end (reading the directory included).

Frame task (the memory target: within 2 GB resident): 1,000,000 frames of 768 dims in
1,000 utterances of 1,000 frames, with a CTM labelling every frame (40 classes), probed
with the default frame sample (`--max-frames`), in a subprocess whose peak resident memory
(VmHWM) is its own. Two layers keep the generated files at 6 GB (memory does not depend
on the number of layers: they are read one at a time).

    python -m bench.bench_probe                       # both, full size
    python -m bench.bench_probe --items 2000 --frames 100000   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from w2v.pipeline.outputs import SETTINGS, new_entry, output_name, write_manifest

SPEED_TARGET_S = 60.0
MEMORY_TARGET_GB = 2.0


def _settings(layers: list[int], pool: str) -> dict:
    s = dict.fromkeys(SETTINGS)
    s.update(layers=layers, pool=pool, format="npy", model="generated", dtype="float32")
    if "dtype_out" in s:
        s["dtype_out"] = "float32"
    return s


def make_utterances(root: Path, items: int, layers: int, dim: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    emb = root / "emb"
    emb.mkdir(parents=True)
    y = rng.integers(0, 10, size=items)
    means = rng.standard_normal((10, dim)).astype(np.float32) * 0.3
    settings = _settings(list(range(layers)), "mean")
    entries = {}
    with open(root / "labels.csv", "w") as f:
        f.write("path,class,speaker\n")
        for i in range(items):
            x = rng.standard_normal((layers, dim), dtype=np.float32)
            x[layers // 2] += means[y[i]]
            name = f"u{i:06d}.wav"
            np.save(emb / output_name(name, "npy"), x)
            path = f"/corpus/{name}"
            entries[path] = new_entry(path, settings, output=output_name(name, "npy"), frames=500)
            f.write(f"{path},c{y[i]},s{i % 200}\n")
    write_manifest(emb, entries)
    return root


def make_frames(root: Path, frames: int, per_item: int, layers: int, dim: int) -> Path:
    rng = np.random.default_rng(1)
    emb = root / "emb"
    emb.mkdir(parents=True)
    settings = _settings(list(range(layers)), "none")
    entries = {}
    with open(root / "phones.ctm", "w") as ctm:
        for i in range(frames // per_item):
            name = f"u{i:05d}.wav"
            out = np.lib.format.open_memmap(
                emb / output_name(name, "npy"),
                mode="w+",
                dtype=np.float32,
                shape=(layers, per_item, dim),
            )
            for layer in range(layers):
                out[layer] = rng.standard_normal((per_item, dim), dtype=np.float32)
            out.flush()
            del out
            path = f"/corpus/{name}"
            entries[path] = new_entry(
                path, settings, output=output_name(name, "npy"), frames=per_item
            )
            # one 100 ms phone after another, 40 phone classes
            for k in range(per_item // 5):
                ctm.write(f"u{i:05d} 1 {k * 0.1:.3f} 0.100 p{rng.integers(40)}\n")
    write_manifest(emb, entries)
    return root


# CPU seconds: the process and its finished children (joblib's workers), so a run on a
# busy machine can still be judged: on 2 idle cores, wall time is about CPU / 2 with --jobs 2
_CHILD = """
import json, os, sys, time
from w2v.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
elapsed = time.perf_counter() - start
from joblib.externals.loky import get_reusable_executor
get_reusable_executor().shutdown(wait=True)
t = os.times()
with open("/proc/self/status") as f:
    peak = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
cpu = t.user + t.system + t.children_user + t.children_system
print(json.dumps({"code": code, "seconds": elapsed, "cpu": cpu, "peak_kb": peak}), file=sys.stderr)
"""


def run_cli(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=False
    )
    last = proc.stderr.strip().splitlines()[-1]
    try:
        return json.loads(last)
    except ValueError:
        raise RuntimeError(proc.stderr[-2000:]) from None


def _load() -> str:
    """The 1-minute load average: other work on the machine slows every figure here."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--skip", choices=("utterance", "frame"), default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="w2v-bench-probe-"))
    try:
        if args.skip != "utterance":
            t = time.perf_counter()
            root = make_utterances(work / "utt", args.items, args.layers, args.dim)
            print(
                f"generated {args.items} x {args.layers} x {args.dim} in {time.perf_counter() - t:.0f} s"
            )
            r = run_cli(
                [
                    "probe",
                    str(root / "emb"),
                    "--labels",
                    str(root / "labels.csv"),
                    "--out",
                    str(root / "out"),
                    "--group-by",
                    "speaker",
                    "--jobs",
                    str(args.jobs),
                    "--quiet",
                ]
            )
            verdict = "meets" if r["seconds"] < SPEED_TARGET_S else "MISSES"
            print(
                f"utterance task: {r['seconds']:.1f} s (target < {SPEED_TARGET_S:.0f} s: {verdict}), "
                f"{r['cpu']:.1f} CPU s, peak RSS {r['peak_kb'] / 2**20:.2f} GiB, exit {r['code']}; "
                f"load average {_load()}"
            )
            shutil.rmtree(work / "utt")
        if args.skip != "frame":
            t = time.perf_counter()
            root = make_frames(work / "frames", args.frames, 1000, 2, args.dim)
            print(
                f"generated {args.frames} frames x 2 layers x {args.dim} in {time.perf_counter() - t:.0f} s"
            )
            r = run_cli(
                [
                    "probe",
                    str(root / "emb"),
                    "--labels",
                    str(root / "phones.ctm"),
                    "--task",
                    "frame",
                    "--out",
                    str(root / "out"),
                    "--quiet",
                ]
            )
            gb = r["peak_kb"] * 1024 / 1e9
            verdict = "meets" if gb < MEMORY_TARGET_GB else "MISSES"
            print(
                f"frame task: {args.frames} frames, peak RSS {gb:.2f} GB (target < "
                f"{MEMORY_TARGET_GB:.0f} GB: {verdict}), {r['seconds']:.0f} s, exit {r['code']}; "
                f"load average {_load()}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
