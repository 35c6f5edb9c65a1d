"""End to end: `w2v embed` vs a straightforward transformers loop over a mixed corpus.

The corpus (generated with a fixed seed, or reused with ``--corpus DIR``):
N files, durations uniform in [min, max] seconds, rates 8/16/22.05/44.1/48 kHz,
wav (PCM_16) and flac, about a quarter stereo, tones plus noise.

Both sides embed the same files with the same random-init weights (a
transformers ``Wav2Vec2Model`` saved with ``save_pretrained``, plus a
``Wav2Vec2FeatureExtractor(do_normalize=True)`` beside it) into `.npy` files,
mean-pooled per layer, and run alternately (transformers, w2v, transformers, ...):

* transformers, one file at a time: soundfile.read → channel mean → soxr to
  16 kHz ("HQ", the resampler w2v uses, so only the pipeline structure differs)
  → feature extractor → ``model(x, output_hidden_states=True)`` (sdpa,
  inference mode) → mean of the asked layers → np.save;
* w2v: ``w2v embed files.txt --model DIR --layers ... --pool mean`` (length-sorted
  batches, decoding on a thread pool overlapped with the model, no layer past the
  deepest asked for).

Each side runs as its own process (``w2v embed`` through its CLI), so wall times
include start-up and loading the model from disk on both sides. The table reports
files/s, audio seconds per second, the speed-up, and the max |difference| between
the first side's pooled outputs and each other side's, over all files. It also splits
each side's wall time into the time inside the model's forward passes (each side
reports it: ``w2v embed``'s summary line, the loop's last line) and the rest, and
gives the speed-up of the model time alone: where the two speed-ups agree, the
pipeline around the model costs nothing on either side. Last, a FLOP bound: the
corpus' forward-pass FLOPs in fp32 (as w2v computes them) over the machine's measured
fp32 matmul peak, the least time any exact fp32 pipeline could spend in the model,
and so the most it could gain over the first side on this machine.

    python -m bench.bench_embed                              # 200 files, 1-30 s, base
    python -m bench.bench_embed --files 40 --max-seconds 10  # a quick look
    python -m bench.bench_embed --sides transformers transformers-tuned w2v:float32 w2v:bfloat16
    python -m bench.bench_embed --size large --out bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    SIZES,
    loadavg,
    machine_description,
    matmul_peak,
    median,
    model_flops,
    ort_matmul_peak,
)

RATES = (8000, 16000, 22050, 44100, 48000)


# Corpus ----------------------------------------------------------------------------


def make_corpus(root: Path, n: int, min_s: float, max_s: float, seed: int = 0) -> list[Path]:
    """``n`` files of tones plus noise in ``root``; the same files for the same arguments."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        seconds = rng.uniform(min_s, max_s)
        rate = int(rng.choice(RATES))
        channels = 2 if rng.random() < 0.25 else 1
        ext = "flac" if rng.random() < 0.5 else "wav"
        t = np.arange(int(seconds * rate)) / rate
        tones = sum(
            rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 0.45 * rate) * t)
            for _ in range(3)
        )
        data = tones[:, None] + 0.05 * rng.standard_normal((t.shape[0], channels))
        path = root / f"{i:04d}_{rate}_{channels}ch.{ext}"
        sf.write(path, np.clip(data, -1, 1).astype(np.float32), rate, subtype="PCM_16")
        files.append(path)
    return files


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.suffix in (".wav", ".flac"))


def audio_seconds(files: list[Path]) -> float:
    import soundfile as sf

    return sum(sf.info(str(f)).duration for f in files)


def flop_bound(files: list[Path], model_dir: Path, device: str) -> tuple[float, float]:
    """The corpus' forward-pass FLOPs in fp32 as w2v computes them (one file at a time,
    direct convolutions), and the machine's measured fp32 matmul peak (GFLOP/s).
    FLOPs / peak is the least time any pipeline doing this arithmetic could spend in
    the model on this machine."""
    import w2v
    from w2v.pipeline.audio import probe

    config = w2v.load(model_dir).config
    flops = 0.0
    for f in files:
        flops += model_flops(config, 1, probe(f).samples_16k)
    # the best GEMM this machine offers: ONNX Runtime's MLAS can be twice torch.mm (RESULTS.md)
    peak = matmul_peak(torch.float32, device)
    return flops, max(peak, ort_matmul_peak()) if device == "cpu" else peak


# Model -----------------------------------------------------------------------------


def build(size: str, path: Path) -> Path:
    """A random-init transformers model and its feature extractor saved in ``path``."""
    import transformers

    torch.manual_seed(0)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**SIZES[size])).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(
        do_normalize=True, return_attention_mask=False
    ).save_pretrained(path)
    return path


# The two sides ---------------------------------------------------------------------


def run_transformers(
    files: list[Path],
    model_dir: Path,
    out: Path,
    layers: list[int],
    tune: bool = False,
    device: str = "cpu",
) -> None:
    """The straightforward loop: one file at a time, every step in sequence."""
    import soundfile as sf
    import soxr
    import transformers

    if tune:
        from w2v.allocator import tune_allocator

        tune_allocator("reuse")
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = transformers.Wav2Vec2Model.from_pretrained(model_dir, attn_implementation="sdpa")
    model = model.eval().to(device)
    out.mkdir(parents=True, exist_ok=True)
    model_seconds = 0.0
    for f in files:
        data, rate = sf.read(str(f), dtype="float32", always_2d=True)
        wave = data.mean(axis=1, dtype=np.float32)
        if rate != 16000:
            wave = soxr.resample(wave, rate, 16000, quality="HQ")
        x = extractor(wave, sampling_rate=16000, return_tensors="pt").input_values.to(device)
        start = time.perf_counter()
        with torch.inference_mode():
            states = model(x, output_hidden_states=True).hidden_states
            pooled = torch.stack([states[i][0].mean(0) for i in layers]).float().cpu()
        model_seconds += time.perf_counter() - start
        np.save(out / f"{f.name}.npy", pooled.numpy())
    # the same words as w2v embed's summary line, which timed() reads
    print(f"transformers loop: (model {model_seconds:.1f} s)", file=sys.stderr)


def side_command(side: str, list_file: Path, model_dir: Path, out: Path, args) -> list[str]:
    """Each side runs in a fresh process, as a user would run it (start-up and loading included)."""
    for tag, mode in (("-tuned", "reuse"), ("-glibc", "glibc")):
        if side.startswith("w2v" + tag):
            return ["env", f"W2V_ALLOCATOR={mode}"] + side_command(
                side.replace(tag, ""), list_file, model_dir, out, args
            )
    if side.startswith("w2v-ort"):  # the graph exported once before the timed runs
        return side_command("w2v:float32", list_file, onnx_graph(model_dir), out, args) + [
            "--backend",
            "onnxruntime",
        ]
    if side.startswith("w2v"):
        cmd = [sys.executable, "-m", "w2v.cli", "embed", str(list_file), "--model", str(model_dir)]
        cmd += ["--out", str(out), "--layers", args.layers, "--pool", "mean", "--quiet"]
        cmd += ["--dtype", side.split(":")[1], "--device", args.device]
        if args.batch_seconds:
            cmd += ["--batch-seconds", str(args.batch_seconds)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        return cmd
    cmd = [sys.executable, "-m", "bench.bench_embed", "--side", side, "--list", str(list_file)]
    cmd += ["--model-dir", str(model_dir), "--side-out", str(out), "--layers", args.layers]
    return cmd + ["--device", args.device]


def onnx_graph(model_dir: Path) -> Path:
    """Where the w2v-ort side's graph (``w2v export --onnx``) of ``model_dir`` lies."""
    return model_dir.parent / "model.onnx"


def output_file(side: str, out: Path, f: Path, list_file: Path) -> Path:
    """Where ``side`` wrote the array of ``f``: w2v keys list entries by their path
    relative to the list file's folder."""
    if not side.startswith("w2v"):
        return out / f"{f.name}.npy"
    try:
        key = f.relative_to(list_file.parent).as_posix()
    except ValueError:
        key = f.name
    return out / f"{key}.npy"


def max_diff(files: list[Path], sides: tuple[str, str], tmp: Path, list_file: Path) -> float:
    a, b = (tmp / side.replace(":", "_") for side in sides)
    return max(
        float(
            np.abs(
                np.load(output_file(sides[0], a, f, list_file))
                - np.load(output_file(sides[1], b, f, list_file))
            ).max()
        )
        for f in files
    )


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak resident memory (GiB) and seconds in the model of one run of ``cmd``.

    The model time is what the side reports on stderr as "(model X s": w2v embed's
    summary line, or run_transformers' last line. It covers the forward passes
    (pooling included), so wall minus model is start-up, loading, decoding the model
    waited for, and writing.
    """
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        text = err.read()
    sys.stderr.write(text)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    found = re.findall(r"\(model (\d+(?:\.\d+)?) s", text)
    model = float(found[-1]) if found else float("nan")
    return wall, usage.ru_maxrss / 2**20, model  # ru_maxrss is in KiB


# Main ------------------------------------------------------------------------------


LABELS = {
    "transformers": "transformers loop",
    "transformers-tuned": "transformers loop, w2v.tune_allocator('reuse') first",
    "w2v:float32": "w2v embed",
    "w2v:bfloat16": "w2v embed --dtype bfloat16",
    "w2v-tuned:float32": "w2v embed, W2V_ALLOCATOR=reuse",
    "w2v-glibc:float32": "w2v embed, W2V_ALLOCATOR=glibc",
    "w2v-ort:float32": "w2v embed --backend onnxruntime (graph exported once, beforehand)",
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--corpus", type=Path, help="reuse (or create) the corpus in this directory")
    ap.add_argument("--size", default="base", choices=list(SIZES))
    ap.add_argument("--layers", default="0,6,12", help="comma-separated layer indices")
    ap.add_argument("--reps", type=int, default=1, help="timed runs of each side, alternating")
    ap.add_argument(
        "--sides",
        nargs="+",
        default=["transformers", "w2v:float32", "w2v-ort:float32"],
        choices=list(LABELS),
        help="pipelines to time (w2v:DTYPE runs `w2v embed --dtype DTYPE`)",
    )
    ap.add_argument("--workers", type=int, default=None, help="w2v decoding threads")
    ap.add_argument("--batch-seconds", type=float, default=None, help="w2v batch budget")
    ap.add_argument("--device", default="cpu", help="both sides run the model here (cpu, cuda)")
    ap.add_argument("--out", type=Path, help="append the table to this markdown file")
    ap.add_argument(
        "--no-bound", action="store_true", help="skip the fp32 FLOP bound (counts + matmul peak)"
    )
    # internal: one transformers run in this process
    ap.add_argument("--quick", action="store_true", help="40 files of 1-10 s")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--list", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--side-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    layers = [int(x) for x in args.layers.split(",")]
    if args.quick:
        args.files, args.max_seconds = 40, 10.0
    if args.side:
        files = [Path(line) for line in args.list.read_text().splitlines() if line]
        run_transformers(
            files,
            args.model_dir,
            args.side_out,
            layers,
            tune=args.side == "transformers-tuned",
            device=args.device,
        )
        return

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = args.corpus or tmp / "corpus"
        files = corpus_files(corpus) if corpus.is_dir() else []
        if len(files) < args.files:
            print(f"writing {args.files} files to {corpus} ...", flush=True)
            files = make_corpus(corpus, args.files, args.min_seconds, args.max_seconds)
        files = files[: args.files]
        seconds = audio_seconds(files)
        model_dir = build(args.size, tmp / "model")
        list_file = tmp / "files.txt"
        list_file.write_text("".join(f"{f}\n" for f in files))
        if any(side.startswith("w2v-ort") for side in args.sides):
            start = time.perf_counter()
            export = [sys.executable, "-m", "w2v.cli", "export", "--onnx", str(model_dir)]
            subprocess.run([*export, str(onnx_graph(model_dir))], check=True)
            print(f"w2v export --onnx: {time.perf_counter() - start:.1f} s (once, not timed below)")
        print(loadavg(), flush=True)

        times: dict[str, list[float]] = {side: [] for side in args.sides}
        rss: dict[str, float] = dict.fromkeys(args.sides, 0.0)
        model_s: dict[str, list[float]] = {side: [] for side in args.sides}
        for _ in range(args.reps):
            for side in args.sides:
                out = tmp / side.replace(":", "_")
                shutil.rmtree(out, ignore_errors=True)
                t, peak, in_model = timed(side_command(side, list_file, model_dir, out, args))
                times[side].append(t)
                model_s[side].append(in_model)
                rss[side] = max(rss[side], peak)
                print(
                    f"{LABELS[side]}: {t:.1f} s (model {in_model:.1f} s), peak RSS {peak:.2f} GiB",
                    flush=True,
                )
        first = args.sides[0]
        diffs = {side: max_diff(files, (first, side), tmp, list_file) for side in args.sides[1:]}
        bound = flop_bound(files, model_dir, args.device) if not args.no_bound else None

    n = len(files)
    base = median(times[first])
    lines = [
        f"Machine: {machine_description(args.device)}; {loadavg()} at the end",
        f"Corpus: {n} files, {args.min_seconds:g}-{args.max_seconds:g} s "
        f"({seconds:.0f} s of audio), rates {'/'.join(str(r) for r in RATES)} Hz, "
        f"wav+flac, ~1/4 stereo; model: random-init wav2vec2-{args.size}, layers {args.layers}, "
        f"mean-pooled; {args.reps} timed run(s) per side, alternating, median. Each side is a "
        "fresh process (start-up and model loading included); both resample with soxr HQ; "
        f"w2v batch_seconds {args.batch_seconds or 'default'}.",
        "",
        f"| pipeline | wall s | model s | rest s | files/s | audio s/s | speed-up "
        f"| model speed-up | peak RSS GiB | max abs diff vs {LABELS[first]} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_model = median(model_s[first])
    for side in args.sides:
        t, m = median(times[side]), median(model_s[side])
        diff = f"{diffs[side]:.1e}" if side in diffs else ""
        lines.append(
            f"| {LABELS[side]} | {t:.1f} | {m:.1f} | {t - m:.1f} | {n / t:.2f} | "
            f"{seconds / t:.1f} | **{base / t:.2f}x** | {base_model / m:.2f}x | "
            f"{rss[side]:.2f} | {diff} |"
        )
    lines += [
        "",
        "model s: time inside the forward passes (pooling included), as each side reports it; "
        "rest s: wall minus model (start-up, loading, decoding not hidden, writing).",
    ]
    if bound is not None:
        flops, peak = bound
        least = flops / (peak * 1e9)
        lines += [
            "",
            f"FLOP bound (fp32): the corpus' forward passes are {flops / 1e12:.1f} TFLOP as w2v "
            f"computes them; at this machine's measured fp32 matmul peak ({peak:.0f} GFLOP/s) "
            f"they take at least {least:.1f} s. Against the first side ({LABELS[first]}: "
            f"{base_model:.1f} s in the model, {base:.1f} s wall), an fp32 pipeline doing this "
            f"arithmetic could be at most {base_model / least:.2f}x faster in the model, and "
            f"{base / least:.2f}x end to end even if start-up, loading, decoding and writing "
            "took no time at all.",
        ]
    print("\n".join(lines), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(f"\n## End to end: w2v embed vs transformers loop ({args.size}, {n} files)\n\n")
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
